/**
 * Checks that the Plotly charts of executed notebooks draw in a browser (CI).
 *
 * For each executed notebook: `jupyter nbconvert --to html` into OUT, load the page in headless Chromium
 * with `--dump-dom` and assert that every chart `<div class="nbtune-plot">` was drawn by Plotly
 * (`js-plotly-plot` added to it, an `svg.main-svg`, `g.trace` groups with `path.js-line` lines or bar points), then
 * save a `--screenshot` PNG next to the HTML. The page is loaded with a small script added at its end
 * that measures, once the charts have drawn, the boxes of each chart's legend, axis titles and tick labels
 * (`getBoundingClientRect`): a legend that overlaps an axis title or tick label, or that sticks out of its
 * chart (clipped), fails the check. `--page` checks standalone HTML pages (such as `out/demo/report.html`)
 * the same way, without nbconvert. Exit status 1 with a message per failure.
 *
 * Usage: deno run -A scripts/check_notebook_html.ts [--out DIR] [--budget MS] [--window W,H]
 *                    [--min-charts N] [--page] EXECUTED.ipynb... | PAGE.html...
 * Defaults: --out out/notebooks/html, --budget 10000 (Chromium virtual time), --window 1280,4000,
 * --min-charts 1. Needs `jupyter nbconvert` and `chromium` (or $CHROMIUM) on the PATH.
 * @module
 */

import { CliUsageError, defineCli, runCli } from "./_cli.ts";

interface Args {
  out: string;
  budget: number;
  window: string;
  minCharts: number;
  page: boolean;
  notebooks: string[];
}

const HTML_CLI = defineCli({
  name: "check_notebook_html",
  summary:
    "Exports executed notebooks to HTML and checks in headless Chromium that every Plotly chart drew; " +
    "saves a screenshot next to each page. Needs jupyter nbconvert and chromium (or $CHROMIUM).",
  usage: "deno run -A scripts/check_notebook_html.ts [options] EXECUTED.ipynb...",
  positionals: { min: 1, max: Infinity, names: "EXECUTED.ipynb..." },
  options: {
    out: {
      type: "string",
      default: "out/notebooks/html",
      placeholder: "DIR",
      description: "folder for the HTML and screenshots",
      example: "--out out/html",
    },
    budget: {
      type: "integer",
      default: 10000,
      min: 0,
      placeholder: "MS",
      description: "Chromium virtual-time budget",
      example: "--budget 20000",
    },
    window: {
      type: "string",
      default: "1280,4000",
      placeholder: "W,H",
      description: "browser window size",
      example: "--window 1280,2000",
    },
    "min-charts": {
      type: "integer",
      default: 1,
      min: 0,
      description: "fewest charts a notebook must have",
      example: "--min-charts 2",
    },
    page: {
      type: "boolean",
      default: false,
      description: "the inputs are standalone HTML pages, not notebooks (no nbconvert)",
      example: "--page",
    },
  },
  examples: [
    "deno run -A scripts/check_notebook_html.ts out/notebooks/01-quickstart.ipynb",
    "deno run -A scripts/check_notebook_html.ts --page --out out/demo out/demo/report.html",
  ],
});

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { PYDEVD_DISABLE_FILE_VALIDATION: "1" },
    }).output();
  } catch (error) {
    throw new Error(`Cannot run ${cmd}: ${error instanceof Error ? error.message : error}`);
  }
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

function chromiumArgs(budget: number, window: string, userDataDir: string): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    `--user-data-dir=${userDataDir}`,
    `--window-size=${window}`,
    `--virtual-time-budget=${budget}`,
  ];
}

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(pattern)].length;
}

/**
 * What Plotly left in the DOM; `problems` is empty when every chart drew.
 *
 * @example
 * ```ts
 * const drawn = '<div id="a" class="nbtune-plot js-plotly-plot"><svg class="main-svg"><g class="trace scatter">' +
 *   '<path class="js-line"></path></g></svg></div>';
 * if (inspectDom(drawn, 1).problems.length !== 0) throw new Error("should pass");
 * if (inspectDom('<div id="a" class="nbtune-plot"></div>', 1).problems.length === 0) throw new Error("should fail");
 * ```
 */
export function inspectDom(dom: string, minCharts: number): { summary: string; problems: string[] } {
  const divs = [...dom.matchAll(/<div\b[^>]*\bclass="([^"]*\bnbtune-plot\b[^"]*)"/g)].map((m) => m[1]);
  const drawn = divs.filter((c) => /\bjs-plotly-plot\b/.test(c)).length;
  const svgs = count(dom, /<svg\b[^>]*class="main-svg"/g);
  const traces = count(dom, /<g\b[^>]*class="trace\b/g);
  const lines = count(dom, /<path\b[^>]*class="js-line"/g);
  const bars = count(dom, /<g\b[^>]*class="point"/g);
  const problems: string[] = [];
  if (divs.length < minCharts) {
    problems.push(`found ${divs.length} chart divs, expected at least ${minCharts}`);
  }
  if (drawn < divs.length) {
    problems.push(`${divs.length - drawn} of ${divs.length} charts were not drawn by Plotly`);
  }
  if (divs.length > 0 && (svgs === 0 || traces === 0 || lines + bars === 0)) {
    problems.push(
      `no plotted data (main-svg ${svgs}, g.trace ${traces}, path.js-line ${lines}, bars ${bars})`,
    );
  }
  if (/>plotly\.js is not loaded/.test(dom)) problems.push("a chart reports that plotly.js is not loaded");
  return {
    summary:
      `${drawn}/${divs.length} charts drawn, ${svgs} main-svg, ${traces} traces, ${lines} lines, ${bars} bars`,
    problems,
  };
}

/** A box from `getBoundingClientRect`, in CSS pixels. */
export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** The boxes of one drawn chart, as the script from {@linkcode BOX_SCRIPT} reports them. */
export interface ChartBoxes {
  /** The chart's title text, to name it in messages. */
  title: string;
  /** The chart's outer SVG. */
  svg: Box;
  /** The legend group; null when the chart shows no legend. */
  legend: Box | null;
  /** Axis titles and tick labels, each with its text. */
  labels: (Box & { kind: string; text: string })[];
}

/** Added at the end of a checked page: reports every chart's boxes in `<pre id="nbtune-boxes">`. */
export const BOX_SCRIPT = `<script>
setTimeout(function () {
  function box(el) { var b = el.getBoundingClientRect(); return { x: b.left, y: b.top, w: b.width, h: b.height }; }
  var kinds = { ".g-xtitle text": "x-axis title", ".g-ytitle text": "y-axis title", ".g-y2title text": "right y-axis title",
    ".xtick text": "x tick label", ".ytick text": "y tick label", ".y2tick text": "right y tick label" };
  var charts = [].map.call(document.querySelectorAll(".js-plotly-plot"), function (plot) {
    var legend = plot.querySelector("g.legend"), title = plot.querySelector(".gtitle");
    var labels = [];
    Object.keys(kinds).forEach(function (sel) {
      plot.querySelectorAll(sel).forEach(function (el) {
        var b = box(el); if (b.w > 0 && b.h > 0) { b.kind = kinds[sel]; b.text = el.textContent; labels.push(b); }
      });
    });
    return { title: title ? title.textContent : "", svg: box(plot.querySelector("svg.main-svg")),
      legend: legend ? box(legend) : null, labels: labels };
  });
  var pre = document.createElement("pre"); pre.id = "nbtune-boxes"; pre.style.display = "none"; pre.textContent = JSON.stringify(charts);
  document.body.appendChild(pre);
}, 4000);
</script>`;

function overlap(a: Box, b: Box): number {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

/**
 * Legend problems of drawn charts: a legend overlapping an axis title or tick label (by more than 1 px²),
 * or reaching outside its chart's SVG (clipped). Empty when every legend stands clear.
 *
 * @example
 * ```ts
 * import { legendProblems } from "./check_notebook_html.ts";
 * const svg = { x: 0, y: 0, w: 700, h: 450 };
 * const axis = { x: 670, y: 150, w: 20, h: 120, kind: "right y-axis title", text: "exact match, %" };
 * const clear = { title: "sweep", svg, legend: { x: 80, y: 400, w: 300, h: 40 }, labels: [axis] };
 * if (legendProblems([clear]).length !== 0) throw new Error("a legend below the plot is fine");
 * const over = { ...clear, legend: { x: 600, y: 100, w: 100, h: 60 } };
 * if (!legendProblems([over])[0].includes("right y-axis title")) throw new Error("overlap not found");
 * const clipped = { ...clear, legend: { x: 650, y: 400, w: 100, h: 40 } };
 * if (!legendProblems([clipped])[0].includes("outside")) throw new Error("clipping not found");
 * ```
 */
export function legendProblems(charts: readonly ChartBoxes[]): string[] {
  const problems: string[] = [];
  charts.forEach((chart, i) => {
    const name = `chart ${i + 1}${chart.title ? ` ("${chart.title}")` : ""}`;
    const legend = chart.legend;
    if (!legend) return;
    const hits = chart.labels.filter((label) => overlap(legend, label) > 1);
    for (const kind of new Set(hits.map((h) => h.kind))) {
      const texts = hits.filter((h) => h.kind === kind).map((h) => JSON.stringify(h.text)).slice(0, 3);
      problems.push(`${name}: the legend overlaps the ${kind} ${texts.join(", ")}`);
    }
    const s = chart.svg;
    if (
      legend.x < s.x - 1 || legend.y < s.y - 1 || legend.x + legend.w > s.x + s.w + 1 ||
      legend.y + legend.h > s.y + s.h + 1
    ) {
      problems.push(`${name}: the legend reaches outside the chart (clipped); give it room (layout.margin)`);
    }
  });
  return problems;
}

/** The boxes the page's {@linkcode BOX_SCRIPT} reported, from Chromium's `--dump-dom` output. */
export function readBoxes(dom: string): ChartBoxes[] | undefined {
  const found = dom.match(/<pre id="nbtune-boxes"[^>]*>([\s\S]*?)<\/pre>/);
  if (!found) return undefined;
  const text = found[1].replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  return JSON.parse(text) as ChartBoxes[];
}

async function checkOne(notebook: string, args: Args): Promise<string[]> {
  const name = notebook.replace(/^.*[\\/]/, "").replace(/\.(ipynb|html?)$/, "");
  await Deno.mkdir(args.out, { recursive: true });
  let page: string;
  if (args.page) {
    page = await Deno.realPath(notebook);
  } else {
    const convert = await run("jupyter", ["nbconvert", "--to", "html", notebook, "--output-dir", args.out]);
    if (!convert.ok) return [`nbconvert failed:\n${convert.stderr.trim()}`];
    page = await Deno.realPath(`${args.out}/${name}.html`);
  }
  // A copy with the box script at its end (the page itself stays as written).
  const html = `${await Deno.realPath(args.out)}/${name}.checked.html`;
  const source = await Deno.readTextFile(page);
  const at = source.lastIndexOf("</body>");
  await Deno.writeTextFile(
    html,
    at < 0 ? source + BOX_SCRIPT : source.slice(0, at) + BOX_SCRIPT + source.slice(at),
  );
  const url = `file://${html.split("/").map(encodeURIComponent).join("/")}`;
  const chromium = Deno.env.get("CHROMIUM") ?? "chromium";
  const profile = await Deno.makeTempDir({ prefix: "nbtune-chromium-" });
  try {
    const dump = await run(chromium, [...chromiumArgs(args.budget, args.window, profile), "--dump-dom", url]);
    if (!dump.ok) return [`chromium --dump-dom failed:\n${dump.stderr.trim().slice(-2000)}`];
    const { summary, problems } = inspectDom(dump.stdout, args.minCharts);
    const boxes = readBoxes(dump.stdout);
    if (!boxes) problems.push("the box script did not report (raise --budget?)");
    else problems.push(...legendProblems(boxes));
    const png = `${args.out}/${name}.png`;
    const shot = await run(chromium, [
      ...chromiumArgs(args.budget, args.window, profile),
      `--screenshot=${png}`,
      url,
    ]);
    if (!shot.ok) problems.push(`chromium --screenshot failed:\n${shot.stderr.trim().slice(-2000)}`);
    console.log(
      `${problems.length ? "FAIL" : "ok  "} ${notebook}: ${summary}; ${
        boxes?.length ?? 0
      } legends checked; ` +
        `html ${html}; screenshot ${png}`,
    );
    return problems;
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

async function main(args: Args): Promise<number> {
  let failed = 0;
  for (const notebook of args.notebooks) {
    const problems = await checkOne(notebook, args);
    for (const problem of problems) console.error(`     ${notebook}: ${problem}`);
    if (problems.length) failed++;
  }
  if (failed) console.error(`check_notebook_html: ${failed} of ${args.notebooks.length} notebooks failed`);
  return failed ? 1 : 0;
}

if (import.meta.main) {
  await runCli(HTML_CLI, async ({ values: v, positionals }) => {
    if (!/^\d+,\d+$/.test(v.window)) throw new CliUsageError(`--window needs W,H; got "${v.window}"`);
    const code = await main({ ...v, minCharts: v["min-charts"], notebooks: positionals });
    if (code !== 0) Deno.exit(code);
  });
}

/**
 * Checks that the Plotly charts of executed notebooks draw in a browser (CI).
 *
 * For each executed notebook: `jupyter nbconvert --to html` into OUT, load the page in headless Chromium
 * with `--dump-dom` and assert that every chart `<div class="nbtune-plot">` was drawn by Plotly
 * (`js-plotly-plot` added to it, an `svg.main-svg`, `g.trace` groups with `path.js-line` lines), then
 * save a `--screenshot` PNG next to the HTML. Exit status 1 with a message per failure.
 *
 * Usage: deno run -A scripts/check_notebook_html.ts [--out DIR] [--budget MS] [--window W,H]
 *                    [--min-charts N] EXECUTED.ipynb...
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
  },
  examples: ["deno run -A scripts/check_notebook_html.ts out/notebooks/01-quickstart.ipynb"],
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
  const problems: string[] = [];
  if (divs.length < minCharts) {
    problems.push(`found ${divs.length} chart divs, expected at least ${minCharts}`);
  }
  if (drawn < divs.length) {
    problems.push(`${divs.length - drawn} of ${divs.length} charts were not drawn by Plotly`);
  }
  if (divs.length > 0 && (svgs === 0 || traces === 0 || lines === 0)) {
    problems.push(`no plotted data (main-svg ${svgs}, g.trace ${traces}, path.js-line ${lines})`);
  }
  if (/>plotly\.js is not loaded/.test(dom)) problems.push("a chart reports that plotly.js is not loaded");
  return {
    summary: `${drawn}/${divs.length} charts drawn, ${svgs} main-svg, ${traces} traces, ${lines} lines`,
    problems,
  };
}

async function checkOne(notebook: string, args: Args): Promise<string[]> {
  const name = notebook.replace(/^.*[\\/]/, "").replace(/\.ipynb$/, "");
  await Deno.mkdir(args.out, { recursive: true });
  const convert = await run("jupyter", ["nbconvert", "--to", "html", notebook, "--output-dir", args.out]);
  if (!convert.ok) return [`nbconvert failed:\n${convert.stderr.trim()}`];
  const html = await Deno.realPath(`${args.out}/${name}.html`);
  const url = `file://${html.split("/").map(encodeURIComponent).join("/")}`;
  const chromium = Deno.env.get("CHROMIUM") ?? "chromium";
  const profile = await Deno.makeTempDir({ prefix: "nbtune-chromium-" });
  try {
    const dump = await run(chromium, [...chromiumArgs(args.budget, args.window, profile), "--dump-dom", url]);
    if (!dump.ok) return [`chromium --dump-dom failed:\n${dump.stderr.trim().slice(-2000)}`];
    const { summary, problems } = inspectDom(dump.stdout, args.minCharts);
    const png = `${args.out}/${name}.png`;
    const shot = await run(chromium, [
      ...chromiumArgs(args.budget, args.window, profile),
      `--screenshot=${png}`,
      url,
    ]);
    if (!shot.ok) problems.push(`chromium --screenshot failed:\n${shot.stderr.trim().slice(-2000)}`);
    console.log(
      `${problems.length ? "FAIL" : "ok  "} ${notebook}: ${summary}; html ${html}; screenshot ${png}`,
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

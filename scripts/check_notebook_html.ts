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

interface Args {
  out: string;
  budget: number;
  window: string;
  minCharts: number;
  notebooks: string[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    out: "out/notebooks/html",
    budget: 10000,
    window: "1280,4000",
    minCharts: 1,
    notebooks: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new RangeError(`${flag} needs a value`);
      return v;
    };
    const int = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new RangeError(`${flag} needs an integer ≥ 0; got "${v}"`);
      return n;
    };
    switch (flag) {
      case "--out":
        args.out = value();
        break;
      case "--budget":
        args.budget = int(value());
        break;
      case "--window":
        args.window = value();
        if (!/^\d+,\d+$/.test(args.window)) throw new RangeError(`--window needs W,H; got "${args.window}"`);
        break;
      case "--min-charts":
        args.minCharts = int(value());
        break;
      case "-h":
      case "--help":
        console.log(
          "Usage: deno run -A scripts/check_notebook_html.ts [--out DIR] [--budget MS] [--window W,H] " +
            "[--min-charts N] EXECUTED.ipynb...",
        );
        Deno.exit(0);
        break;
      default:
        if (flag.startsWith("-")) throw new RangeError(`Unknown option "${flag}"; see --help`);
        args.notebooks.push(argv[i]);
    }
  }
  if (args.notebooks.length === 0) throw new RangeError("Give at least one executed notebook; see --help");
  return args;
}

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

async function main(): Promise<number> {
  const args = parseArgs(Deno.args);
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
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`check_notebook_html: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}

/**
 * Plotly figures as Jupyter MIME bundles and standalone HTML files.
 *
 * plotly.js (4.8 MB) is embedded once per notebook: {@linkcode plotlySetup} shows it in a `<script>`, and
 * chart outputs only hold a `<div>` plus a small script that waits for `window.Plotly`. If no setup was
 * shown in this kernel, the first chart bundle carries the library itself. Works in classic Notebook,
 * JupyterLab, VS Code (all outputs share one page) and `jupyter nbconvert --to html` exports; frontends
 * with a Plotly renderer use the `application/vnd.plotly.v1+json` part instead.
 *
 * @module
 */

import { display, isJupyter, type MimeBundle, type RichObject, richObject, toBundle } from "./display.ts";
import { escapeHtml, scriptJson, uniqueId } from "./_html.ts";
import { plotlyJs } from "./_plotly_source.ts";
import { defineOptions, type FieldsOf, oneOf, string } from "../options/schema.ts";

/** A Plotly figure (see https://plotly.com/javascript/reference/). */
export interface PlotlyFigure {
  /** Traces. */
  data: Record<string, unknown>[];
  /** Layout (title, axes, size). */
  layout?: Record<string, unknown>;
  /** Plot config (modebar, responsiveness). */
  config?: Record<string, unknown>;
}

/** Options for {@linkcode plotlyBundle}. */
export interface PlotlyBundleOptions {
  /** DOM id of the chart `<div>`.
   * @default a fresh random id */
  divId?: string;
  /** Whether the html part carries plotly.js: `"auto"` does so only for the first chart of a kernel
   * that never showed {@linkcode plotlySetup}; `"none"` never (for pages that load it themselves).
   * @default "auto" */
  library?: "auto" | "inline" | "none";
}

/** The schema of {@linkcode plotlyBundle}'s and {@linkcode plotlyChart}'s options. */
export const plotlyBundleSchema = defineOptions(
  "plotlyBundle",
  {
    divId: string("DOM id of the chart <div> (default: a fresh random id).", { nonEmpty: true }),
    library: oneOf(
      'Whether the html part carries plotly.js ("auto": only for the first chart of a kernel).',
      [
        "auto",
        "inline",
        "none",
      ] as const,
      { default: "auto" },
    ),
  } satisfies FieldsOf<PlotlyBundleOptions>,
);

const SHOWN = Symbol.for("nbtune.notebook.plotlyShown");
const DEFAULT_HEIGHT = 420;

/** Whether plotly.js was already put into an output of this kernel (process-wide, across module copies). */
function libraryShown(): boolean {
  return (globalThis as Record<symbol, unknown>)[SHOWN] === true;
}

function markLibraryShown(): void {
  (globalThis as Record<symbol, unknown>)[SHOWN] = true;
}

/** The `<script>` that defines `window.Plotly`, tagged so pages and tests can find it. */
function libraryScript(): string {
  const { source, version } = plotlyJs();
  // Only `</script` can end an inline script early; `<\/` is the same text inside JS strings and regexes.
  const safe = source.replace(/<\/(script)/gi, "<\\/$1");
  return `<script type="text/javascript" data-nbtune-plotly="${version}">${safe}</script>`;
}

/**
 * A bundle that loads plotly.js into the notebook page; show it once (e.g. as a setup cell's last
 * expression) before the charts.
 *
 * @example
 * ```ts
 * const setup = plotlySetup().bundle;
 * if (!(setup["text/html"] as string).includes("data-nbtune-plotly")) throw new Error("no library");
 * if (!(setup["text/plain"] as string).startsWith("plotly.js")) throw new Error("wrong text");
 * ```
 */
export function plotlySetup(): RichObject {
  return richObject(() => {
    markLibraryShown();
    const { version, source } = plotlyJs();
    const text = `plotly.js ${version} loaded (${
      (source.length / 2 ** 20).toFixed(1)
    } MiB, once per notebook)`;
    return {
      "text/html":
        `${libraryScript()}\n<div class="nbtune-plotly-setup" style="color:#888;font-size:small">${text}</div>`,
      "text/plain": text,
    };
  });
}

/**
 * In a kernel, shows {@linkcode plotlySetup} as its own output unless plotly.js was already put into an
 * output of this kernel; does nothing outside Jupyter. Charts that update in place call this first, so the
 * library never sits inside an output that a later update replaces.
 *
 * @example
 * ```ts
 * await ensurePlotlySetup(); // outside Jupyter: nothing to do, nothing printed
 * ```
 */
export async function ensurePlotlySetup(): Promise<void> {
  if (!isJupyter() || libraryShown()) return;
  await display(plotlySetup());
}

/** A one-line description of a figure for `text/plain`. */
function summary(figure: PlotlyFigure): string {
  const title = figureTitle(figure);
  const traces = figure.data.map((t, i) => {
    const x = t.x ?? t.y ?? t.values;
    return `${t.name ?? `trace ${i}`} (${Array.isArray(x) ? x.length : 0} points)`;
  });
  return `Plotly figure${title ? ` "${title}"` : ""}: ${traces.join(", ") || "no traces"}`;
}

function figureTitle(figure: PlotlyFigure): string | undefined {
  const title = figure.layout?.title;
  if (typeof title === "string") return title;
  if (typeof title === "object" && title !== null && typeof (title as { text?: unknown }).text === "string") {
    return (title as { text: string }).text;
  }
  return undefined;
}

/** The `<div>` and drawing script of one chart (no library). */
function chartHtml(figure: PlotlyFigure, divId: string): string {
  const height = typeof figure.layout?.height === "number" ? figure.layout.height : DEFAULT_HEIGHT;
  const config = { responsive: true, displaylogo: false, ...figure.config };
  // Polls because the library may still be parsing, or the frontend may attach the output to the page
  // after running its scripts (JupyterLab does); gives up with a message after 60 s.
  const script = `(function () {
  var fig = ${scriptJson({ data: figure.data, layout: figure.layout ?? {}, config })};
  var id = ${scriptJson(divId)}, started = Date.now();
  function draw() {
    var el = document.getElementById(id);
    if (el && window.Plotly && window.Plotly.newPlot) { window.Plotly.newPlot(el, fig.data, fig.layout, fig.config); return; }
    if (Date.now() - started > 60000) {
      if (el) el.textContent = "plotly.js is not loaded: show plotlySetup() in an earlier cell, or re-run this cell.";
      return;
    }
    setTimeout(draw, 50);
  }
  draw();
})();`;
  return `<div id="${
    escapeHtml(divId)
  }" class="nbtune-plot" style="width:100%;height:${height}px;"></div>\n` +
    `<script type="text/javascript">${script}</script>`;
}

/**
 * A MIME bundle for a figure: `application/vnd.plotly.v1+json`, `text/html` and a `text/plain` summary.
 *
 * @example
 * ```ts
 * const fig = { data: [{ type: "scatter", x: [1, 2], y: [3, 1], name: "loss" }], layout: { title: "run" } };
 * const bundle = plotlyBundle(fig, { divId: "loss-chart", library: "none" });
 * const keys = Object.keys(bundle).sort().join(" ");
 * if (keys !== "application/vnd.plotly.v1+json text/html text/plain") throw new Error(keys);
 * if (bundle["text/plain"] !== 'Plotly figure "run": loss (2 points)') throw new Error("wrong summary");
 * ```
 */
export function plotlyBundle(figure: PlotlyFigure, options: PlotlyBundleOptions = {}): MimeBundle {
  plotlyBundleSchema.parse(options);
  if (!Array.isArray(figure?.data)) throw new TypeError("plotlyBundle() needs a figure with a data array");
  const library = options.library ?? "auto";
  if (!["auto", "inline", "none"].includes(library)) {
    throw new RangeError(`plotlyBundle() library must be "auto", "inline" or "none"; got "${library}"`);
  }
  const inline = library === "inline" || (library === "auto" && !libraryShown());
  if (inline) markLibraryShown();
  const html = chartHtml(figure, options.divId ?? uniqueId("nbtune-plot"));
  return {
    "application/vnd.plotly.v1+json": {
      data: figure.data,
      layout: figure.layout ?? {},
      config: figure.config ?? {},
    },
    "text/html": inline ? `${libraryScript()}\n${html}` : html,
    "text/plain": summary(figure),
  };
}

/**
 * A figure that renders as a chart when it is a cell's last expression (the bundle is built when shown).
 *
 * @example
 * ```ts
 * const chart = plotlyChart({ data: [{ x: [1], y: [1] }] }, { library: "none" });
 * if (Deno.inspect(chart) !== "Plotly figure: trace 0 (1 points)") throw new Error(Deno.inspect(chart));
 * ```
 */
export function plotlyChart(figure: PlotlyFigure, options: PlotlyBundleOptions = {}): RichObject {
  defineOptions("plotlyChart", plotlyBundleSchema.fields).parse(options);
  return richObject(() => plotlyBundle(figure, options));
}

/** Options for {@linkcode writeHtml}. */
export interface WriteHtmlOptions {
  /** Page title.
   * @default "nbtune" */
  title?: string;
}

/** The schema of {@linkcode writeHtml}'s options. */
export const writeHtmlSchema = defineOptions(
  "writeHtml",
  {
    title: string("Page title.", { default: "nbtune" }),
  } satisfies FieldsOf<WriteHtmlOptions>,
);

function isFigure(value: unknown): value is PlotlyFigure {
  return typeof value === "object" && value !== null && Array.isArray((value as PlotlyFigure).data);
}

/**
 * Writes a standalone HTML page with plotly.js inlined once and each figure or bundle in order (bundles
 * with a Plotly part are redrawn from it; others use their `text/html`, else escaped `text/plain`).
 *
 * @example
 * ```ts
 * const path = await Deno.makeTempFile({ suffix: ".html" });
 * await writeHtml(path, [{ data: [{ x: [1, 2], y: [5, 4], name: "loss" }] }], { title: "demo" });
 * const page = await Deno.readTextFile(path);
 * if (!page.includes("<title>demo</title>") || !page.includes('"y":[5,4]')) throw new Error("wrong page");
 * await Deno.remove(path);
 * ```
 */
export async function writeHtml(
  path: string,
  items: PlotlyFigure | MimeBundle | RichObject | (PlotlyFigure | MimeBundle | RichObject)[],
  options: WriteHtmlOptions = {},
): Promise<void> {
  const { title } = writeHtmlSchema.parse(options);
  const list = Array.isArray(items) ? items : [items];
  const parts = list.map((item, i) => {
    const divId = `nbtune-plot-${i}`;
    if (isFigure(item)) return chartHtml(item, divId);
    const bundle = toBundle(item);
    const fig = bundle["application/vnd.plotly.v1+json"];
    if (isFigure(fig)) return chartHtml(fig, divId);
    const html = bundle["text/html"];
    if (typeof html === "string") return html;
    return `<pre>${escapeHtml(String(bundle["text/plain"] ?? ""))}</pre>`;
  });
  const page = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px}section{margin-bottom:2em}</style>
${libraryScript()}
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${parts.map((p) => `<section>\n${p}\n</section>`).join("\n")}
</body>
</html>
`;
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir !== path && dir !== "") await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(path, page);
}

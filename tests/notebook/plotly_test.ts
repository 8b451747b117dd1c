import {
  assert,
  assertEquals,
  assertIncludes,
  assertThrows,
  forgetPlotlyShown,
  libraryCopies,
} from "./_assert.ts";
import { plotlyBundle, plotlyChart, plotlySetup, writeHtml } from "../../lib/notebook/plotly.ts";

const FIGURE = {
  data: [{ type: "scatter", x: [1, 2, 3], y: [3, 2, 1], name: "loss" }],
  layout: { title: "t" },
};

Deno.test("plotlyBundle() has the Plotly JSON, HTML and text MIME keys", () => {
  const bundle = plotlyBundle(FIGURE, { divId: "chart-1", library: "none" });
  assertEquals(Object.keys(bundle).sort(), ["application/vnd.plotly.v1+json", "text/html", "text/plain"]);
  assertEquals((bundle["application/vnd.plotly.v1+json"] as { data: unknown }).data, FIGURE.data);
  const html = bundle["text/html"] as string;
  assertIncludes(html, '<div id="chart-1" class="nbtune-plot"');
  assertIncludes(html, "window.Plotly.newPlot");
  assertEquals(libraryCopies(html), 0);
});

Deno.test("plotly.js is embedded once: the first chart carries it when no setup was shown", () => {
  forgetPlotlyShown();
  const first = plotlyBundle(FIGURE)["text/html"] as string;
  const second = plotlyBundle(FIGURE)["text/html"] as string;
  assertEquals([libraryCopies(first), libraryCopies(second)], [1, 0]);
});

Deno.test("plotly.js is embedded once: after plotlySetup() charts carry no library", () => {
  forgetPlotlyShown();
  const setup = plotlySetup().bundle["text/html"] as string;
  const chart = plotlyChart(FIGURE).bundle["text/html"] as string;
  assertEquals([libraryCopies(setup), libraryCopies(chart)], [1, 0]);
  assert(setup.length > 1_000_000, "the whole minified library is inlined");
});

Deno.test("plotlyBundle() escapes </script in figure data", () => {
  const fig = { data: [{ x: [1], y: [1], name: "</script><script>alert(1)</script>" }] };
  const html = plotlyBundle(fig, { library: "none" })["text/html"] as string;
  assertEquals(html.match(/<\/script/gi)?.length, 1, "only the chart's own closing tag");
  assertIncludes(html, "<\\/script><script>alert(1)<\\/script>");
});

Deno.test("plotlySetup() escapes </script inside the library", async () => {
  const fake = await Deno.makeTempFile({ suffix: ".js" });
  await Deno.writeTextFile(
    fake,
    '/** plotly.js v9.9.9 */ window.Plotly = { s: "</script>", t: "</SCRIPT " };',
  );
  const code = 'import { plotlySetup } from "' + new URL("../../lib/notebook/plotly.ts", import.meta.url) +
    '"; console.log(plotlySetup().bundle["text/html"]);';
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { NBTUNE_PLOTLY_JS: fake, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(fake);
  const html = new TextDecoder().decode(out.stdout);
  assert(out.success, new TextDecoder().decode(out.stderr));
  assertIncludes(html, 'data-nbtune-plotly="9.9.9"');
  assertIncludes(html, 's: "<\\/script>", t: "<\\/SCRIPT "');
  assertEquals(html.match(/<\/script/gi)?.length, 1);
});

Deno.test("plotlyBundle() rejects unknown options and figures without data", () => {
  // deno-lint-ignore no-explicit-any
  const bad: any = { id: "x" };
  assertThrows(() => plotlyBundle(FIGURE, bad), TypeError, '"id"');
  // deno-lint-ignore no-explicit-any
  assertThrows(() => plotlyBundle({} as any), TypeError, "data array");
  // deno-lint-ignore no-explicit-any
  assertThrows(() => plotlyBundle(FIGURE, { library: "cdn" as any }), RangeError, "cdn");
});

Deno.test("writeHtml() writes a standalone page with plotly.js once and every figure's data", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/sub/report.html`;
  await writeHtml(path, [FIGURE, plotlyBundle(FIGURE, { library: "inline" }), { "text/plain": "a < b" }], {
    title: "Run <1>",
  });
  const page = await Deno.readTextFile(path);
  await Deno.remove(dir, { recursive: true });
  assertEquals(libraryCopies(page), 1);
  assertEquals(page.split('"y":[3,2,1]').length - 1, 2);
  assertIncludes(page, "<title>Run &#60;1&#62;</title>");
  assertIncludes(page, "<pre>a &#60; b</pre>");
});

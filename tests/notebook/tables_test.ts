import { assertEquals, assertIncludes, assertThrows } from "./_assert.ts";
import { formatBytes, formatCell, showMemory, table } from "../../lib/notebook/tables.ts";
import { syntheticHistory } from "../../lib/notebook/synthetic.ts";

Deno.test("table() aligns text left and numbers right under a dashed header", () => {
  const t = table(
    [{ adapter: "lora", rank: 8, loss: 1.23456 }, { adapter: "dylora", rank: 16, loss: 12.5 }],
    {
      title: "runs",
    },
  );
  assertEquals(Deno.inspect(t).split("\n"), [
    "runs",
    "adapter  rank    loss",
    "-------  ----  ------",
    "lora        8  1.2346",
    "dylora     16    12.5",
  ]);
});

Deno.test("table() keeps the given column order and leaves missing cells empty", () => {
  const text = Deno.inspect(table([{ a: 1, b: "x" }, { a: 2 }], { columns: ["b", "a"] }));
  assertEquals(text.split("\n"), ["b  a", "-  -", "x  1", "   2"]);
});

Deno.test("table() escapes HTML in cells and the caption", () => {
  const html = table([{ name: "<b>" }], { title: "a&b" }).bundle["text/html"] as string;
  assertIncludes(html, '<td style="text-align:left">&#60;b&#62;</td>');
  assertIncludes(html, ">a&#38;b</caption>");
});

Deno.test("table() rejects unknown options", () => {
  // deno-lint-ignore no-explicit-any
  const bad: any = { header: true };
  assertThrows(() => table([], bad), TypeError, "header");
});

Deno.test("formatBytes() uses binary units with one decimal", () => {
  assertEquals([formatBytes(0), formatBytes(1023), formatBytes(1024), formatBytes(1.5 * 2 ** 30)], [
    "0 B",
    "1023 B",
    "1.0 KiB",
    "1.5 GiB",
  ]);
});

Deno.test("formatCell() rounds to 5 significant digits and switches to exponents at the extremes", () => {
  assertEquals([
    formatCell(0.1234567),
    formatCell(2e-4),
    formatCell(1.5e9 + 0.5),
    formatCell(null),
    formatCell([1]),
  ], [
    "0.12346",
    "2.00e-4",
    "1.50e+9",
    "",
    "[1]",
  ]);
});

Deno.test("showMemory() lists owners largest first with shares, then the totals", () => {
  const record = syntheticHistory(1)[0];
  const lines = Deno.inspect(showMemory(record)).split("\n");
  assertEquals(lines[0], "Memory after step 1");
  assertEquals(lines[3].split(/\s+/).slice(0, 3), ["Weights", "48.0", "MiB"]);
  assertEquals(lines.slice(-3).map((l) => l.split(/\s{2,}/)[0]), [
    "tensors (180 live)",
    "wasm heap",
    "process rss",
  ]);
});

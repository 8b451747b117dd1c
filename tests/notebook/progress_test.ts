import { assert, assertEquals, assertThrows, captureLog, withFakeJupyter } from "./_assert.ts";
import { estimateEta, formatDuration, progress, progressLine } from "../../lib/notebook/progress.ts";

Deno.test("estimateEta() extrapolates the average rate to the remaining items", () => {
  assertEquals(estimateEta(10, 40, 5), 15); // 2 items/s, 30 left
  assertEquals(estimateEta(1, 3, 2), 4);
  assertEquals(estimateEta(0, 10, 1), undefined);
  assertEquals(estimateEta(10, 10, 7), 0);
});

Deno.test("formatDuration() writes m:ss below an hour and h:mm:ss above", () => {
  assertEquals([formatDuration(0), formatDuration(59.6), formatDuration(600), formatDuration(3600)], [
    "0:00",
    "1:00",
    "10:00",
    "1:00:00",
  ]);
});

Deno.test("progressLine() shows count, percent, elapsed < ETA and the total time when done", () => {
  assertEquals(progressLine("", 1, 4, 2), "[#####···············]  1/4   25%  0:02 < 0:06");
  assertEquals(progressLine("x", 4, 4, 8), "x  [####################]  4/4  100%  0:08 total");
});

Deno.test("progress() prints about ten plain lines when stdout is not a terminal", async () => {
  const printed = await captureLog(async () => {
    const bar = progress(100, { label: "docs" });
    for (let i = 0; i < 100; i++) bar.tick();
    await bar.done();
  });
  assert(printed.length >= 10 && printed.length <= 12, printed.join("\n"));
  assert(printed.at(-1)!.startsWith("docs  [####################]  100/100  100%"), printed.at(-1));
});

Deno.test("progress() in a kernel updates one HTML bar in place", async () => {
  const calls = await withFakeJupyter(async () => {
    const bar = progress(3, { label: "load" });
    bar.tick(3);
    await bar.done("ok");
  });
  const ids = new Set(calls.map((c) => c.options.display_id));
  assertEquals(ids.size, 1);
  assertEquals(calls.map((c) => c.options.update), [false, true]);
  assert((calls[1].bundle["text/html"] as string).includes('<progress value="3" max="3"'));
});

Deno.test("progress() rejects a negative total and unknown options", () => {
  assertThrows(() => progress(-1), RangeError, "total");
  // deno-lint-ignore no-explicit-any
  const bad: any = { title: "x" };
  assertThrows(() => progress(1, bad), TypeError, "title");
});

import {
  assert,
  assertEquals,
  assertThrows,
  captureLog,
  forgetPlotlyShown,
  withFakeJupyter,
} from "./_assert.ts";
import { liveTrainingChart } from "../../lib/notebook/live_chart.ts";
import { syntheticHistory } from "../../lib/notebook/synthetic.ts";

const STEPS = 12;
const EVERY = 5;

Deno.test("liveTrainingChart() in a terminal prints a line every `every` steps and a summary", async () => {
  const printed = await captureLog(async () => {
    const chart = liveTrainingChart({ every: EVERY });
    for (const record of syntheticHistory(STEPS, { evalEvery: 6 })) await chart.onStep(record);
    await chart.finish();
  });
  // steps 1, 5, 10, then the last step (12) and the summary from finish()
  assertEquals(printed.map((l) => l.slice(0, 9)), [
    "step    1",
    "step    5",
    "step   10",
    "step   12",
    "done: 12 ",
  ]);
  assert(printed[3].includes("eval "), printed[3]);
  assert(printed[4].includes("best eval"), printed[4]);
});

Deno.test("liveTrainingChart() in a kernel updates one display in place and ends with every step", async () => {
  forgetPlotlyShown();
  let displayId = "";
  const calls = await withFakeJupyter(async () => {
    const chart = liveTrainingChart({ every: EVERY, title: "live" });
    displayId = chart.displayId;
    // Not awaited on purpose: a trainer may ignore the returned promise.
    for (const record of syntheticHistory(STEPS)) chart.onStep(record);
    await chart.finish();
  });
  const [setup, ...chart] = calls;
  assert(!("display_id" in setup.options), "plotly.js goes into its own output first");
  assertEquals(chart.map((c) => c.options.display_id), Array(chart.length).fill(displayId));
  assertEquals(chart.map((c) => c.options.update), [false, true, true, true]);
  const final = chart.at(-1)!.bundle["application/vnd.plotly.v1+json"] as {
    data: { name: string; x: number[] }[];
    layout: { meta: { nbtune: { steps: number; finished: boolean } } };
  };
  assertEquals(final.data[0].x.length, STEPS);
  assertEquals(final.layout.meta.nbtune, { live: displayId, steps: STEPS, finished: true });
});

Deno.test("liveTrainingChart() rejects a bad `every` and unknown options", () => {
  assertThrows(() => liveTrainingChart({ every: 0 }), RangeError, "every");
  // deno-lint-ignore no-explicit-any
  const bad: any = { interval: 3 };
  assertThrows(() => liveTrainingChart(bad), TypeError, "interval");
});

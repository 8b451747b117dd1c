import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { lossChart, memoryChart, trainingChart } from "../../lib/notebook/charts.ts";
import { syntheticHistory } from "../../lib/notebook/synthetic.ts";
import type { StepRecord } from "../../lib/train/types.ts";

const STEPS = 12;

Deno.test("lossChart() plots loss per step, eval loss where evals ran, and lr on the second axis", () => {
  const history = syntheticHistory(STEPS, { evalEvery: 4 });
  const fig = lossChart(history, { title: "run" });
  const [loss, evalLoss, lr] = fig.data;
  assertEquals(loss.x, history.map((r) => r.step));
  assertEquals(evalLoss.x, [4, 8, 12]);
  assertEquals(evalLoss.y, [4, 8, 12].map((s) => history[s - 1].evalLoss));
  assertEquals([lr.yaxis, (fig.layout!.yaxis2 as { overlaying: string }).overlaying], ["y2", "y"]);
});

Deno.test("lossChart() leaves out the eval trace when no eval ran", () => {
  assertEquals(lossChart(syntheticHistory(3)).data.map((t) => t.name), ["loss", "lr"]);
});

Deno.test("memoryChart() stacks the breakdown in MiB when the trainer reports one", () => {
  const fig = memoryChart(syntheticHistory(STEPS));
  // Human labels; parts that stay 0 (quantization constants, workspace, host memory here) are left out.
  assertEquals(fig.data.map((t) => t.name), [
    "Weights",
    "Adapters",
    "Gradients",
    "Optimizer states",
    "Activations",
  ]);
  assert(fig.data.every((t) => t.stackgroup === "memory"));
  assertEquals((fig.data[0].y as number[])[0], 48);
});

Deno.test("memoryChart() draws tensor, heap and rss lines without a breakdown", () => {
  const history: StepRecord[] = syntheticHistory(2).map((r) => ({
    ...r,
    memory: { ...r.memory, breakdown: undefined },
  }));
  const fig = memoryChart(history);
  assertEquals(fig.data.map((t) => t.name), ["tensors", "wasm heap", "rss"]);
  assertEquals(fig.data[2].y, [300, 300]);
});

Deno.test("trainingChart() puts memory in a lower panel sharing the step axis", () => {
  const fig = trainingChart(syntheticHistory(3));
  assert(fig.data.filter((t) => t.yaxis === "y3").length === 5);
  assertEquals((fig.layout!.xaxis2 as { matches: string }).matches, "x");
});

Deno.test("chart options reject unknown keys and bad heights", () => {
  // deno-lint-ignore no-explicit-any
  const bad: any = { titel: "x" };
  assertThrows(() => lossChart([], bad), TypeError, "titel");
  assertThrows(() => memoryChart([], { height: 0 }), RangeError, "height");
});

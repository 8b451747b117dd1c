import { assert, assertEquals, assertIncludes, assertThrows } from "./_assert.ts";
import { MEMORY_PART_LABELS } from "../../lib/engine/memory_parts.ts";
import { plotPlans, showPlanTable } from "../../lib/notebook/plan_chart.ts";
import { planForModel } from "../../lib/plan/plan_for_model.ts";
import { planMemory } from "../../lib/plan/plan_memory.ts";
import { DEVICE_PARTS } from "../../lib/plan/plan_table.ts";

const CONFIG = {
  vocab_size: 512,
  hidden_size: 128,
  intermediate_size: 344,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const BATCH = { batchSize: 8, seqLen: 43 };
const PLANS = [
  planForModel(CONFIG, BATCH),
  planForModel(CONFIG, { ...BATCH, method: "lora", targetModules: ["q_proj", "v_proj"] }),
  planForModel(CONFIG, { ...BATCH, method: "qlora", targetModules: ["q_proj", "v_proj"] }),
  planForModel(CONFIG, { ...BATCH, optimizer: "galore", galore: { r: 32 } }),
];

interface Fig {
  data: { type: string; name: string; x: string[]; y: number[] }[];
  layout: Record<string, unknown>;
}

const figure = (chart: ReturnType<typeof plotPlans>) =>
  chart.bundle["application/vnd.plotly.v1+json"] as unknown as Fig;

Deno.test("plotPlans() bundle has plotly JSON with one stacked bar trace per breakdown part", () => {
  const chart = plotPlans(PLANS, { title: "embedded model, batch 8 × 43" });
  assertEquals(Object.keys(chart.bundle).sort(), [
    "application/vnd.plotly.v1+json",
    "text/html",
    "text/plain",
  ]);
  const fig = figure(chart);
  assertEquals(fig.data.map((t) => t.name), DEVICE_PARTS.map((k) => MEMORY_PART_LABELS[k]));
  assert(
    fig.data.every((t) => t.type === "bar" && t.x.length === PLANS.length),
    "one bar per plan in every trace",
  );
  assertEquals(fig.layout.barmode, "stack");
  assertEquals((fig.layout.title as { text: string }).text, "embedded model, batch 8 × 43");
  assertEquals(fig.data[0].x, ["Full fine-tuning (fp32)", "LoRA r=8", "NF4 + LoRA r=8", "GaLore r=32"]);
  // Small plans are shown in MB; the stacked parts add up to each plan's total.
  assertIncludes(JSON.stringify(fig.layout.yaxis), "MB");
  PLANS.forEach((p, i) => {
    const stacked = fig.data.reduce((s, t) => s + t.y[i], 0);
    assert(
      Math.abs(stacked - p.total / 1e6) < 1e-6,
      `${p.method}: stacked ${stacked} MB vs ${p.total / 1e6} MB`,
    );
  });
  assertIncludes(chart.bundle["text/html"] as string, "window.Plotly.newPlot");
});

Deno.test("plotPlans() rescales the budget line, takes labels and numbers repeated labels", () => {
  const fig = figure(plotPlans(PLANS, { budget: "100MB", labels: ["a", "b", "c", "d"], unit: "MB" }));
  assertEquals(fig.data[0].x, ["a", "b", "c", "d"]);
  assertEquals((fig.layout.shapes as { y0: number }[])[0].y0, 100);
  assertIncludes(JSON.stringify(fig.layout.annotations), "budget 100 MB");
  const twice = figure(plotPlans([PLANS[0], PLANS[0]]));
  assertEquals(twice.data[0].x, ["Full fine-tuning (fp32) #1", "Full fine-tuning (fp32) #2"]);
  const gb = figure(plotPlans([planMemory({ config: "7B", method: "qlora" })]));
  assertIncludes(JSON.stringify(gb.layout.yaxis), "GB");
});

Deno.test("plotPlans() and showPlanTable() reject bad input", () => {
  assertThrows(() => plotPlans([]), TypeError, "non-empty");
  assertThrows(() => plotPlans(PLANS, { labels: ["x"] }), RangeError, "one entry per plan");
  assertThrows(() => plotPlans(PLANS, { unit: "KB" as never }), RangeError, "unit");
  assertThrows(() => plotPlans(PLANS, { colour: "red" } as never), TypeError, "colour");
  assertThrows(() => showPlanTable(PLANS, { height: 3 } as never), TypeError, "height");
});

Deno.test("showPlanTable() lists each plan's parts, total and host bytes, with fits under a budget", () => {
  const t = showPlanTable(PLANS, { budget: "110MB" });
  const text = Deno.inspect(t);
  assertIncludes(text, "Peak memory by part (MB)");
  for (const k of [...DEVICE_PARTS, "total", "host", "fits"]) assertIncludes(text, k);
  const lines = text.split("\n");
  const qlora = lines.find((l) => l.startsWith("NF4 + LoRA r=8"))!;
  assertIncludes(qlora, (PLANS[2].total / 1e6).toFixed(2));
  assertIncludes(qlora, (PLANS[2].breakdown.hostOffloaded / 1e6).toFixed(2));
  assert(
    qlora.trimEnd().endsWith("yes") && lines.find((l) => l.startsWith("Full"))!.trimEnd().endsWith("no"),
  );
  assertIncludes(t.bundle["text/html"] as string, "<table");
});

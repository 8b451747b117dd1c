/**
 * The planner and the engine estimate read their numbers from the registries: a DoRA
 * adapter (adapter kinds), Lion (optimizers), the 4-bit formats and the model families
 * change the plan exactly as their registry rows say.
 */
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { adapterKind } from "../../lib/adapters/registry.ts";
import { optimizerKind } from "../../lib/optim/registry.ts";
import { estimateTrainingMemory } from "../../lib/plan/engine_estimate.ts";
import { linearModules, modelShape } from "../../lib/plan/model_shape.ts";
import { planMemory } from "../../lib/plan/plan_memory.ts";
import { QUANT_FORMATS } from "../../lib/quant/formats.ts";

const CFG = {
  vocab_size: 512,
  hidden_size: 128,
  intermediate_size: 344,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const QV = ["q_proj", "v_proj"];

Deno.test("DoRA (useDora) adds one magnitude per output row of every adapted linear, in plan and estimate", () => {
  const lora = planMemory({ config: CFG, method: "lora", r: 8, targetModules: QV });
  const dora = planMemory({ config: CFG, method: "lora", r: 8, targetModules: QV, useDora: true });
  const outRows = 4 * (128 + 64); // 4 layers × (q out 128 + v out 2·32)
  assertEquals(dora.trainableParams - lora.trainableParams, outRows);
  const mods = linearModules(modelShape(CFG)).filter((m) => QV.includes(m.name));
  const fromRegistry = 4 *
    mods.reduce((s, m) => s + adapterKind("dora").params(m.inFeatures, m.outFeatures, 8), 0);
  assertEquals(dora.trainableParams, fromRegistry);
  const e0 = estimateTrainingMemory(CFG, {
    method: "lora",
    r: 8,
    targetModules: QV,
    batchSize: 2,
    seqLen: 16,
  });
  const e1 = estimateTrainingMemory(CFG, {
    method: "lora",
    r: 8,
    targetModules: QV,
    useDora: true,
    batchSize: 2,
    seqLen: 16,
  });
  assertEquals(e1.trainableParams - e0.trainableParams, outRows);
  // magnitudes and the cached ‖W‖² of the base: 2 × rows × 4 bytes more resident adapter bytes
  assertEquals(e1.breakdown.adapters - e0.breakdown.adapters, 2 * outRows * 4);
  assert(e1.peakTensorBytes > e0.peakTensorBytes, "DoRA's rescaling keeps more tensors for backward");
  assertThrows(() => planMemory({ config: CFG, method: "dylora", useDora: true }), RangeError, "DyLoRA");
});

Deno.test("Lion keeps one moment per parameter: half of AdamW's state in plan and estimate", () => {
  const adam = planMemory({ config: CFG, method: "full", weightDtype: "fp32" });
  const lion = planMemory({ config: CFG, method: "full", weightDtype: "fp32", optimizer: "lion" });
  assertEquals(optimizerKind("lion").cost.moments, 1);
  assertEquals(lion.breakdown.optimizerStates * 2, adam.breakdown.optimizerStates);
  const ea = estimateTrainingMemory(CFG, { batchSize: 2, seqLen: 16 });
  const el = estimateTrainingMemory(CFG, { optimizer: "lion", batchSize: 2, seqLen: 16 });
  assertEquals(el.optimizerTensorBytes * 2, ea.optimizerTensorBytes);
  assertEquals(el.optimizerTensorBytes, 4 * el.trainableParams);
});

Deno.test("4-bit weights are costed from the quant-format registry", () => {
  const q = planMemory({
    config: CFG,
    method: "qlora",
    quantize: { type: "fp4", doubleQuant: false, blocksize: 128 },
  });
  const mods = linearModules(modelShape(CFG));
  const want = 4 * mods.reduce((s, m) => {
    const b = QUANT_FORMATS.fp4.matrixBytes(m.outFeatures * m.inFeatures, 1, {
      doubleQuant: false,
      blocksize: 128,
    });
    return s + b.constants;
  }, 0);
  assertEquals(q.breakdown.quantConstants, want);
  const e = estimateTrainingMemory(CFG, { method: "qlora", batchSize: 2, seqLen: 16 });
  const host = 4 *
    mods.reduce((s, m) => s + QUANT_FORMATS.nf4.layerBytes(m.outFeatures, m.inFeatures, {}), 0);
  assertEquals(e.breakdown.hostOffloaded, host);
});

Deno.test("model families: qwen2 plans and is estimated (the engine runs it); falcon's estimate is refused with the reason", () => {
  const cfg = { ...CFG, model_type: "qwen2" };
  assert(modelShape(cfg).qkvBias, "the qwen2 row has q/k/v biases");
  assert(planMemory({ config: cfg, method: "lora" }).total > 0);
  assert(estimateTrainingMemory(cfg, {}).peakTensorBytes > 0, "qwen2 runs on the engine");
  assertThrows(
    () => estimateTrainingMemory({ ...CFG, model_type: "falcon", n_head: 4 }, {}),
    RangeError,
    "LayerNorm",
  );
  assertEquals(
    linearModules(modelShape({ ...CFG, model_type: "falcon", n_head: 4 }))[0].name,
    "query_key_value",
  );
});

Deno.test("plan labels name a non-Adam optimizer by its registry label, and fitPlan keeps it", async () => {
  const { fitPlan, planLabel } = await import("../../lib/plan/fit_plan.ts");
  const plan = planMemory({ config: CFG, method: "full", optimizer: "lion", weightDtype: "fp32" });
  assertEquals(planLabel(plan), "Full fine-tuning (fp32) + Lion");
  const fits = fitPlan({ config: CFG, method: "full", optimizer: "lion", weightDtype: "fp32" }, "1GB");
  assert(fits.some((f) => f.plan.spec.optimizer === "lion"), fits.map((f) => f.sentence).join("\n"));
});

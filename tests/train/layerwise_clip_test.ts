/**
 * Layer-wise clipping (issue 16): the exact global norm from a norm-only prepass, the
 * previous step's norm, and per-block clipping.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import { runStep, type StepResult } from "../../lib/train/step.ts";
import { train } from "../../lib/train/trainer.ts";
import { type LayerwiseClip, PREVIOUS_NORM_SAFETY } from "../../lib/train/layerwise_clip.ts";
import type { Optimizer, ParamGrad } from "../../lib/optim/optimizer.ts";

await initEngine();
const CONFIG = {
  model_type: "llama",
  vocab_size: 48,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const EXAMPLES = [
  { ids: [1, 5, 9, 3, 7, 11], labels: [1, 5, 9, 3, 7, 11] },
  { ids: [2, 8, 4], labels: [-100, 8, 4] },
  { ids: [3, 3, 30, 31, 40], labels: [3, 3, 30, 31, 40] },
];
// Well below the gradient norm of this model (about 1-3), so every step clips.
const MAX_NORM = 0.05;

/** AdamW that also records, per step call, the squared norm and element count of the gradients it receives. */
function spyAdamW(): Optimizer & { calls: { sq: number; n: number }[] } {
  const inner = createAdamW();
  const calls: { sq: number; n: number }[] = [];
  return {
    name: "adamw",
    calls,
    step(params: ParamGrad[], lr: number) {
      const sq = tf.tidy(() => tf.addN(params.map((p) => tf.sum(tf.square(p.grad)))).dataSync()[0]);
      calls.push({ sq, n: params.reduce((s, p) => s + p.grad.size, 0) });
      inner.step(params, lr);
    },
    stateBytes: () => inner.stateBytes(),
    dispose: () => inner.dispose(),
  };
}

function run(
  mode: "full" | "layerwise",
  clip: LayerwiseClip,
  steps = 3,
): { weights: Float32Array; results: StepResult[]; spy: ReturnType<typeof spyAdamW> } {
  const model = initModel(CONFIG, { seed: 11 });
  const params = model.trainableParams();
  const spy = spyAdamW();
  const results: StepResult[] = [];
  for (let s = 1; s <= steps; s++) {
    results.push(runStep(model, params, [makeMicroBatch(EXAMPLES, 0)], spy, {
      lr: 1e-2,
      maxGradNorm: MAX_NORM,
      mode,
      label: `step ${s}`,
      layerwiseClip: clip,
      previousGradNorm: results.at(-1)?.gradNorm,
    }));
  }
  const weights = tf.tidy(() =>
    tf.concat(params.map((p) => tf.reshape(p.variable, [-1]))).dataSync() as Float32Array
  );
  spy.dispose();
  model.dispose();
  return { weights, results, spy };
}

Deno.test("layer-wise clipping with a norm-only prepass gives the same weights as global-norm clipping of the whole gradient", () => {
  const before = tf.memory().numTensors;
  const full = run("full", "prepass");
  const lw = run("layerwise", "prepass");
  assertEquals(tf.memory().numTensors, before, "leaked tensors");
  for (const r of full.results) {
    assert(r.gradNorm > 4 * MAX_NORM, `clipping must be active: norm ${r.gradNorm}`);
  }
  lw.results.forEach((r, i) => {
    const e = Math.abs(r.gradNorm / full.results[i].gradNorm - 1);
    assert(e < 1e-5, `step ${i + 1}: norm ${r.gradNorm} vs ${full.results[i].gradNorm}`);
  });
  const err = relError(lw.weights, full.weights);
  assert(err < 1e-6, `weights differ: relative error ${err}`);
  // What the optimizer received over a step has the global norm maxGradNorm.
  const perStep = lw.spy.calls.length / 3;
  for (let s = 0; s < 3; s++) {
    const sq = lw.spy.calls.slice(s * perStep, (s + 1) * perStep).reduce((a, c) => a + c.sq, 0);
    assert(Math.abs(Math.sqrt(sq) / MAX_NORM - 1) < 1e-4, `step ${s + 1}: clipped norm ${Math.sqrt(sq)}`);
  }
});

Deno.test("layer-wise 'previous' clipping scales step t by the norm of step t-1 (times the safety factor); step 1 is exact", () => {
  const { results, spy } = run("layerwise", "previous");
  const perStep = spy.calls.length / 3;
  const received = [0, 1, 2].map((s) =>
    Math.sqrt(spy.calls.slice(s * perStep, (s + 1) * perStep).reduce((a, c) => a + c.sq, 0))
  );
  assert(Math.abs(received[0] / MAX_NORM - 1) < 1e-4, `step 1 takes a prepass: ${received[0]}`);
  for (const s of [1, 2]) {
    const want = results[s].gradNorm * MAX_NORM / (PREVIOUS_NORM_SAFETY * results[s - 1].gradNorm);
    assert(
      Math.abs(received[s] / want - 1) < 1e-4,
      `step ${s + 1}: received ${received[s]}, expected ${want}`,
    );
  }
});

Deno.test("layer-wise 'per-block' clipping gives each block at most its share and the step at most maxGradNorm", () => {
  const { spy } = run("layerwise", "per-block", 2);
  const total = spy.calls.slice(0, spy.calls.length / 2).reduce((a, c) => a + c.n, 0);
  let clipped = 0;
  for (const c of spy.calls) {
    const limit = MAX_NORM * Math.sqrt(c.n / total);
    assert(Math.sqrt(c.sq) <= limit * (1 + 1e-4), `block of ${c.n}: norm ${Math.sqrt(c.sq)} > ${limit}`);
    if (Math.sqrt(c.sq) > limit * 0.999) clipped++;
  }
  assert(clipped > 0, "no block was clipped");
  const stepSq = spy.calls.slice(0, spy.calls.length / 2).reduce((a, c) => a + c.sq, 0);
  assert(Math.sqrt(stepSq) <= MAX_NORM * (1 + 1e-4), `step norm ${Math.sqrt(stepSq)}`);
});

Deno.test("train() clips layer-wise updates by default (maxGradNorm 1, prepass), and each mode trains", async () => {
  for (const layerwiseClip of ["prepass", "previous", "per-block"] as const) {
    const model = initModel(CONFIG, { seed: 3 });
    const before = tf.memory().numTensors;
    const h = await train(model, EXAMPLES, {
      steps: 3,
      batchSize: 3,
      lr: 1e-2,
      layerwise: true,
      layerwiseClip,
    });
    assertEquals(tf.memory().numTensors, before, `${layerwiseClip}: leaked tensors`);
    assert(
      h.every((r) => Number.isFinite(r.loss) && r.gradNorm > 0),
      JSON.stringify(h.map((r) => r.gradNorm)),
    );
    model.dispose();
  }
});

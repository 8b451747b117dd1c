import * as tf from "@tensorflow/tfjs-core";
import { assert, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { createAdamW8bit } from "../../lib/optim/adamw8bit.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import { runStep, type StepResult } from "../../lib/train/step.ts";
import { checkDeviceTraining, runDeviceStep } from "../../lib/train/device_step.ts";
import { DivergenceError, LossHistory } from "../../lib/train/divergence.ts";
import type { Optimizer } from "../../lib/optim/optimizer.ts";

// runDeviceStep is what train() runs on webgpu; here (wasm) it must equal runStep's "full" mode.
await initEngine();
const CONFIG = {
  model_type: "llama",
  vocab_size: 48,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const EXAMPLES = [
  { ids: [1, 5, 9, 3, 7, 11], labels: [1, 5, 9, 3, 7, 11] },
  { ids: [2, 8, 4], labels: [-100, 8, 4] },
  { ids: [3, 3, 30, 31, 40], labels: [3, 3, 30, 31, 40] },
];
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
const weights = (m: ReturnType<typeof initModel>) =>
  tf.tidy(() => tf.concat(m.trainableParams().map((p) => tf.reshape(p.variable, [-1]))).dataSync());

const OPTIMIZERS: [string, () => Optimizer][] = [
  ["adamw", () => createAdamW()],
  ["adamw8bit", () => createAdamW8bit({ minSize8bit: 0 })],
];
for (const [name, make] of OPTIMIZERS) {
  Deno.test(`runDeviceStep equals runStep "full" over 3 steps with 2 micro-batches and clipping (${name})`, async () => {
    const before = tf.memory().numTensors;
    const a = initModel(CONFIG, { seed: 3 }), b = initModel(CONFIG, { seed: 3 });
    const micro = [makeMicroBatch(EXAMPLES.slice(0, 2), 0), makeMicroBatch(EXAMPLES.slice(2), 0)];
    const oa = make(), ob = make();
    for (let s = 1; s <= 3; s++) {
      const o = { lr: 1e-2, maxGradNorm: 0.5, label: `step ${s}` };
      let ra!: StepResult;
      tf.tidy(() => {
        ra = runStep(a, a.trainableParams(), micro, oa, { ...o, mode: "full" });
      });
      const rb = await runDeviceStep(b, b.trainableParams(), micro, ob, o);
      assert(rel(rb.loss, ra.loss) < 1e-6, `step ${s} loss ${rb.loss} vs ${ra.loss}`);
      assert(rel(rb.gradNorm, ra.gradNorm) < 1e-5, `step ${s} norm ${rb.gradNorm} vs ${ra.gradNorm}`);
      assert(rb.tokens === ra.tokens && rb.gradientBytes === ra.gradientBytes);
    }
    const wa = weights(a), wb = weights(b);
    let err = 0;
    for (let i = 0; i < wa.length; i++) err = Math.max(err, Math.abs(wa[i] - wb[i]));
    assert(err < 1e-5, `weights differ by ${err}`);
    oa.dispose(), ob.dispose(), a.dispose(), b.dispose();
    assert(tf.memory().numTensors === before, `${tf.memory().numTensors - before} tensors leaked`);
  });
}

Deno.test("runDeviceStep: a NaN weight stops the step with a DivergenceError naming it; nothing leaks", async () => {
  const m = initModel(CONFIG, { seed: 4 });
  attachLoRA(m, { r: 2, alpha: 4, seed: 1 });
  const p = m.trainableParams()[1];
  p.variable.assign(tf.fill(p.variable.shape, NaN));
  const opt = createAdamW();
  const before = tf.memory().numTensors;
  const guard = new LossHistory({
    lossSpikeFactor: 4,
    lossSpikeMargin: 1,
    lossSpikeWindow: 16,
    layerwiseCheck: "prepass",
  }).guard(
    7,
    1e-3,
  );
  const e = await assertRejects(
    () =>
      runDeviceStep(m, m.trainableParams(), [makeMicroBatch(EXAMPLES, 0)], opt, {
        lr: 1e-3,
        maxGradNorm: 1,
        label: "step 7",
        guard,
      }),
    DivergenceError,
  );
  assert(e.message.includes("step 7") && e.message.includes(p.name), e.message);
  assert(tf.memory().numTensors === before, `${tf.memory().numTensors - before} tensors leaked`);
  opt.dispose(), m.dispose();
});

Deno.test("checkDeviceTraining names what webgpu cannot run and what to use instead", () => {
  const msg = (o: Parameters<typeof checkDeviceTraining>[0]) => {
    try {
      checkDeviceTraining(o);
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  assert(msg({ mode: "full", optimizer: "adamw8bit" }) === "");
  assert(msg({ mode: "checkpointed", optimizer: "adamw" }).includes('mode "checkpointed"'));
  assert(msg({ mode: "layerwise", optimizer: "adamw" }).includes('mode "layerwise"'));
  assert(msg({ mode: "full", optimizer: "galore8bit" }).includes('"galore8bit"'));
});

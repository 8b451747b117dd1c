import * as tf from "@tensorflow/tfjs-core";
import { MEMORY_PARTS } from "../../lib/engine/memory_parts.ts";
import { assert, assertEquals, assertRejects, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { createGaLoreAdamW } from "../../lib/optim/galore_adamw.ts";
import { accumulateGradients } from "../../lib/train/accumulate.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import { blockwiseBackward } from "../../lib/train/blockwise.ts";
import { runStep, type StepMode } from "../../lib/train/step.ts";
import { train } from "../../lib/train/trainer.ts";
import type { Optimizer } from "../../lib/optim/optimizer.ts";

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

function flatWeights(model: ReturnType<typeof initModel>): Float32Array {
  return tf.tidy(() =>
    tf.concat(model.trainableParams().map((p) => tf.reshape(p.variable, [-1]))).dataSync() as Float32Array
  );
}

for (const tie of [false, true]) {
  Deno.test(`gradient checkpointing (block-wise recomputation) gives the same gradients as one tape (tied embeddings: ${tie})`, () => {
    const model = initModel({ ...CONFIG, tie_word_embeddings: tie }, { seed: 7 });
    const params = model.trainableParams();
    const mb = makeMicroBatch(EXAMPLES, 0);
    const full = accumulateGradients(model, params, [mb]);
    const got = new Map<tf.Variable, tf.Tensor>();
    const before = tf.memory().numTensors;
    blockwiseBackward(
      model,
      mb,
      mb.numTargets,
      (ps, gs) => ps.forEach((p, i) => got.set(p.variable, gs[i].clone())),
    );
    assertEquals(tf.memory().numTensors, before + got.size, "block-wise backward leaked tensors");
    assertEquals(got.size, params.length);
    params.forEach((p, i) => {
      const err = relError(got.get(p.variable)!.dataSync(), full.grads[i].dataSync());
      assert(err < 1e-5, `${p.name}: relative error ${err}`);
    });
    [...got.values(), ...full.grads].forEach((t) => t.dispose());
    model.dispose();
  });
}

function stepWith(mode: StepMode, makeOpt: () => Optimizer, lora = false): Float32Array {
  const model = initModel(CONFIG, { seed: 11 });
  if (lora) attachLoRA(model, { r: 4, alpha: 8, targetModules: "all-linear" });
  const params = model.trainableParams();
  const opt = makeOpt();
  for (let s = 1; s <= 3; s++) {
    runStep(model, params, [makeMicroBatch(EXAMPLES, 0)], opt, {
      lr: 1e-2,
      maxGradNorm: 0,
      mode,
      label: `step ${s}`,
    });
  }
  const w = flatWeights(model);
  opt.dispose();
  model.dispose();
  return w;
}

Deno.test("layer-wise stepping produces the same weights as the ordinary step (AdamW, GaLore, LoRA)", () => {
  const cases: [string, () => Optimizer, boolean][] = [
    ["adamw", () => createAdamW({ weightDecay: 0.1 }), false],
    ["galore", () => createGaLoreAdamW({ r: 8, updateProjGap: 2, scale: 0.5 }), false],
    ["adamw+lora", () => createAdamW(), true],
  ];
  for (const [name, make, lora] of cases) {
    const full = stepWith("full", make, lora);
    for (const mode of ["layerwise", "checkpointed"] as const) {
      const err = relError(stepWith(mode, make, lora), full);
      // With LoRA the block-wise modes run the hand-written block (fused kernels, not the tape's op
      // chain): gradients agree to ~1e-7 relative, which Adam's normalisation turns into a few 1e-6.
      const tol = lora ? 1e-5 : 1e-6;
      assert(err < tol, `${name} ${mode}: relative error ${err}`);
    }
  }
});

Deno.test("train() reports history with a memory breakdown and leaks no tensors", async () => {
  const model = initModel(CONFIG, { seed: 3 });
  attachLoRA(model, { r: 2, alpha: 4 });
  const before = tf.memory().numTensors;
  const history = await train(model, EXAMPLES, {
    steps: 3,
    batchSize: 2,
    gradAccumSteps: 2,
    lr: 1e-2,
    evalData: EXAMPLES,
  });
  assertEquals(tf.memory().numTensors, before, "a training run leaked tensors");
  assertEquals(history.map((h) => h.step), [1, 2, 3]);
  const b = history[2].memory.breakdown!;
  for (const k of MEMORY_PARTS) assert(k in b, k);
  assert(
    b.adapters > 0 && b.optimizerStates === 2 * b.adapters && b.gradients === b.adapters,
    JSON.stringify(b),
  );
  assertEquals(b.hostOffloaded, 0, "a dense model with fp32 AdamW keeps nothing in host memory");
  assert(b.activations > 0);
  assert(typeof history[2].evalLoss === "number");
  model.dispose();
});

Deno.test("train() refuses layer-wise updates with accumulation, naming the fix (clipping: layerwise_clip_test.ts)", async () => {
  const model = initModel(CONFIG, { seed: 3 });
  await assertRejects(
    () => train(model, EXAMPLES, { steps: 1, layerwise: true, gradAccumSteps: 2 }),
    RangeError,
    "gradAccumSteps: 1",
  );
  await assertRejects(
    () => train(model, EXAMPLES, { steps: 1, layerwise: true, layerwiseClip: "global" } as never),
    RangeError,
    'option "layerwiseClip" must be one of "prepass", "previous", "per-block"',
  );
  await assertRejects(
    () => train(model, EXAMPLES, { steps: 1, lrr: 1 } as never),
    TypeError,
    'unknown option "lrr"',
  );
  model.dispose();
});

Deno.test("a NaN loss stops training at the step where it happens and leaves the weights unchanged", async () => {
  const model = initModel(CONFIG, { seed: 3 });
  const w = flatWeights(model);
  tf.tidy(() => model.norm.weight.assign(tf.fill(model.norm.weight.shape, NaN)));
  await assertRejects(() => train(model, EXAMPLES, { steps: 2 }), RangeError, "step 1");
  tf.tidy(() => model.norm.weight.assign(tf.ones(model.norm.weight.shape)));
  assertEquals(flatWeights(model), w);
  model.dispose();
});

Deno.test("LoRA dropout, hand-written backward: gradient checkpointing reuses the forward's masks (same run)", async () => {
  const run = async (gradientCheckpointing: boolean) => {
    const model = initModel(CONFIG, { seed: 3 });
    attachLoRA(model, { r: 2, alpha: 4, dropout: 0.3 });
    const history = await train(model, EXAMPLES, { steps: 3, batchSize: 2, lr: 1e-2, gradientCheckpointing });
    const w = flatWeights(model);
    model.dispose();
    return { losses: history.map((h) => h.loss), w };
  };
  const a = await run(false), b = await run(true);
  a.losses.forEach((l, i) =>
    assert(Math.abs(l - b.losses[i]) < 1e-6 * Math.abs(l), `step ${i + 1}: ${l} vs ${b.losses[i]}`)
  );
  assert(relError(b.w, a.w) < 1e-6, `weights differ: ${relError(b.w, a.w)}`);
});

/**
 * Must-show of issue 12: the divergence guard stops training with an error naming the
 * step, the micro-batch, the first offending parameter and the lr, and no weight is
 * changed by that step (all three step modes; layer-wise with its pre-pass; the per-block
 * alternative says which blocks it had already updated); lr 1e6 no longer trains silently;
 * out of memory is a clean HeapOutOfMemoryError with no leaked tensors.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { attachDyLoRA, attachLoRA } from "../../lib/adapters/attach.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import { DivergenceError, LossHistory } from "../../lib/train/divergence.ts";
import { saveAdapter } from "../../lib/adapters/peft_format.ts";

await initEngine({ backend: "cpu" });

const CONFIG = {
  model_type: "llama",
  vocab_size: 40,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const DATA = Array.from({ length: 8 }, (_, i) => ({
  ids: Array.from({ length: 6 + (i % 3) }, (_, t) => (i * 5 + t * 3) % 40),
}));
const BASE: TrainOptions = { lr: 1e-3, batchSize: 2, measureMemory: false, shuffleSeed: false };

function weights(model: LlamaForCausalLM): Map<string, number[]> {
  return new Map(model.trainableParams().map((p) => [p.name, [...p.variable.dataSync()]]));
}

/**
 * From step `from` on, the gradient flowing into layer 0's q_proj input is NaN while its
 * forward value is unchanged: the loss stays finite, layer 1 and the head get finite
 * gradients, layer 0 and the embedding get NaN ones.
 */
function poisonLayer0(model: LlamaForCausalLM, from: number): () => void {
  const lin = model.layers[0].linears.q_proj;
  const apply = lin.apply.bind(lin);
  const poison = tf.customGrad(
    ((x: tf.Tensor, save: (ts: tf.Tensor[]) => void) => {
      save([]);
      return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.mul(dy, NaN) };
    }) as unknown as Parameters<typeof tf.customGrad>[0],
  );
  let step = 1; // the step about to run
  lin.apply = (x: tf.Tensor2D) => apply(step >= from ? poison(x) as tf.Tensor2D : x);
  return () => step++;
}

const MODES: [string, TrainOptions][] = [
  ["one tape, accumulation over 2 micro-batches", { gradAccumSteps: 2 }],
  ["gradient checkpointing, 2 micro-batches", { gradientCheckpointing: true, gradAccumSteps: 2 }],
  ["layer-wise (pre-pass)", { layerwise: true, maxGradNorm: 0, batchSize: 4 }],
];

for (const [name, extra] of MODES) {
  Deno.test(`a NaN gradient at step 3 (${name}) stops training naming step, micro-batch, parameter and lr; no weight changed`, async () => {
    const model = initModel(CONFIG, { seed: 1 });
    const tick = poisonLayer0(model, 3);
    let before = weights(model);
    const tensors = tf.memory().numTensors;
    const e = await assertRejects(
      () =>
        train(model, DATA, {
          ...BASE,
          ...extra,
          steps: 5,
          onStep: () => {
            before = weights(model);
            tick();
          },
        }),
      DivergenceError,
    ) as DivergenceError;
    assertEquals(e.info.step, 3);
    assert(
      e.info.parameter?.startsWith("model.layers.0.") || e.info.parameter === "model.embed_tokens.weight",
      e.message,
    );
    assert(
      /micro-batch 1\/\d/.test(e.message) && /lr \d/.test(e.message) && /step 3/.test(e.message),
      e.message,
    );
    assertEquals(e.info.weightsChanged, false);
    for (const [k, w] of weights(model)) assertEquals(w, before.get(k), `${k} changed by the failed step`);
    assertEquals(tf.memory().numTensors, tensors, "tensors leaked by the failed step");
    model.dispose();
  });
}

Deno.test("layer-wise per-block checking (no pre-pass) names the blocks it had already updated", async () => {
  const model = initModel(CONFIG, { seed: 1 });
  poisonLayer0(model, 0);
  const e = await assertRejects(
    () =>
      train(model, DATA, {
        ...BASE,
        layerwise: true,
        maxGradNorm: 0,
        steps: 2,
        divergence: { layerwiseCheck: "per-block" },
      }),
    DivergenceError,
  ) as DivergenceError;
  assertEquals(e.info.weightsChanged, true);
  assert(/already updated.*model\.layers\.1/.test(e.message) && /WERE changed/.test(e.message), e.message);
  model.dispose();
});

const LR_1E6: [string, () => LlamaForCausalLM, TrainOptions][] = [
  ["full parameters", () => initModel(CONFIG, { seed: 2 }), {}],
  ["LoRA", () => attachLoRA(initModel(CONFIG, { seed: 2 }), { r: 4 }), {}],
  [
    "layer-wise 8-bit GaLore",
    () => initModel(CONFIG, { seed: 2 }),
    { optimizer: "galore8bit", galore: { r: 8, layerwise: true }, batchSize: 4 },
  ],
];
for (const [name, make, extra] of LR_1E6) {
  Deno.test(`lr 1e6 (${name}) stops at step 2 with a DivergenceError instead of training a saturated model`, async () => {
    const model = make();
    let before = weights(model);
    const e = await assertRejects(
      () =>
        train(model, DATA, {
          ...BASE,
          ...extra,
          lr: 1e6,
          steps: 10,
          onStep: () => {
            before = weights(model);
          },
        }),
      DivergenceError,
    ) as DivergenceError;
    assertEquals(e.info.step, 2);
    assert(/saturated|more than 4×|non-finite|NaN/.test(e.message), e.message);
    for (const [k, w] of weights(model)) {
      assert(w.every(Number.isFinite), `${k} holds non-finite values`);
      assertEquals(w, before.get(k), `${k} changed by the failed step`);
    }
    model.dispose();
  });
}

Deno.test("a loss far above its recent level stops training before the step changes anything; the factor is configurable", async () => {
  const run = async (divergence?: TrainOptions["divergence"]) => {
    const model = initModel(CONFIG, { seed: 3 });
    let before = weights(model);
    const result = await train(model, DATA, {
      ...BASE,
      lr: 1e-2,
      steps: 6,
      divergence,
      onStep: (r) => {
        if (r.step === 4) tf.tidy(() => model.norm.weight.assign(tf.mul(model.norm.weight, 1000))); // sabotage
        before = weights(model);
      },
    }).then(() => undefined, (e) => e as Error);
    const unchanged = [...weights(model)].every(([k, w]) =>
      JSON.stringify(w) === JSON.stringify(before.get(k))
    );
    model.dispose();
    return { result, unchanged };
  };
  const { result, unchanged } = await run();
  assert(result instanceof DivergenceError && result.info.step === 5, String(result));
  assert(/more than 4× \(and 1 nats above\) the mean/.test(result.message), result.message);
  assert(unchanged, "the spiking step changed weights");
  assertEquals(
    (await run({ lossSpikeFactor: 0 })).result,
    undefined,
    "lossSpikeFactor 0 turns the check off",
  );
});

Deno.test("a spike must also be lossSpikeMargin nats above the recent mean: noise near zero loss is not divergence", () => {
  const h = new LossHistory({
    lossSpikeFactor: 4,
    lossSpikeMargin: 1,
    lossSpikeWindow: 16,
    layerwiseCheck: "prepass",
  });
  for (const l of [0.004, 0.005, 0.004]) h.push(l);
  h.guard(4, 1e-3).checkLoss(0.05); // 11x the mean, but 0.05 nats above it
  let e: unknown;
  try {
    h.guard(4, 1e-3).checkLoss(3);
  } catch (x) {
    e = x;
  }
  assert(e instanceof DivergenceError && /nats above/.test(e.message), String(e));
});

Deno.test("DyLoRA (a rank sampled per step) turns the spike check off unless lossSpikeFactor is set", async () => {
  const run = async (divergence?: TrainOptions["divergence"]) => {
    const model = attachDyLoRA(initModel(CONFIG, { seed: 3 }), { r: 4 });
    const result = await train(model, DATA, {
      ...BASE,
      lr: 1e-2,
      steps: 6,
      divergence,
      onStep: (r) => {
        if (r.step === 4) tf.tidy(() => model.norm.weight.assign(tf.mul(model.norm.weight, 1000))); // sabotage
      },
    }).then(() => undefined, (e) => e as Error);
    model.dispose();
    return result;
  };
  assertEquals(await run(), undefined, "the default guard took DyLoRA's per-step variation for divergence");
  const explicit = await run({ lossSpikeFactor: 4 });
  assert(explicit instanceof DivergenceError && explicit.info.step === 5, String(explicit));
});

Deno.test("saveAdapter refuses non-finite factors, naming the tensor", async () => {
  const model = attachLoRA(initModel(CONFIG, { seed: 4 }), { r: 2 });
  const p = model.trainableParams()[0];
  tf.tidy(() => p.variable.assign(tf.mul(p.variable, Infinity)));
  const dir = await Deno.makeTempDir();
  await assertRejects(() => saveAdapter(model, `${dir}/a`), RangeError, "lora_A.weight");
  await assertRejects(() => Deno.stat(`${dir}/a`), Deno.errors.NotFound);
  model.dispose();
  await Deno.remove(dir, { recursive: true });
});

for (const measureMemory of [true, false]) {
  Deno.test(`out of memory at batch 1024 (measureMemory: ${measureMemory}) is a HeapOutOfMemoryError and leaks no tensor`, async () => {
    const child = new URL("./_oom_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", child, String(measureMemory)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    assert(out.success, `the child failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    const r = JSON.parse(lines[lines.length - 1]);
    assert(r.isHeapError && r.name === "HeapOutOfMemoryError", `${r.name}: ${r.message}`);
    assert(/batchSize/.test(r.message), r.message);
    assertEquals(
      [r.tensorsAfter, r.bytesAfter],
      [r.tensorsBefore, r.bytesBefore],
      "tensors left after the failed step",
    );
  });
}

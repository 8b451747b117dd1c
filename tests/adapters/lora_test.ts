import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import {
  adapterLayers,
  attachDyLoRA,
  attachLoRA,
  setRank,
  trainableParametersLine,
} from "../../lib/adapters/attach.ts";
import { mergeAdapter, unmergeAdapter } from "../../lib/adapters/merge.ts";
import type { DyLoRALinear } from "../../lib/adapters/dylora.ts";
import type { LoRALinear } from "../../lib/adapters/lora.ts";
import { accumulateGradients } from "../../lib/train/accumulate.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";

await initEngine();
const CONFIG = {
  model_type: "llama",
  vocab_size: 40,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const IDS = [[1, 5, 9, 3, 7], [2, 8, 4, 6, 1]];

function logits(model: ReturnType<typeof initModel>): Float32Array {
  return tf.tidy(() => model.forward(IDS).dataSync() as Float32Array);
}

function randomizeAdapters(model: ReturnType<typeof initModel>, seed = 1): void {
  for (const p of model.trainableParams()) {
    tf.tidy(() => p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.2, "float32", seed++)));
  }
}

Deno.test("with B = 0 the adapted model's logits equal the base model's", () => {
  const model = initModel(CONFIG, { seed: 1 });
  const base = logits(model);
  attachLoRA(model, { r: 4, alpha: 8, targetModules: "all-linear" });
  assertEquals(logits(model), base);
  model.dispose();
});

Deno.test("only adapter weights are trainable after attachLoRA, and the PEFT-style line counts them", () => {
  const model = initModel(CONFIG, { seed: 1 });
  attachLoRA(model, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] });
  const names = model.trainableParams().map((p) => p.name);
  assert(names.every((n) => n.includes(".lora_")), names.join());
  // per layer: q A[4,16] B[16,4], v A[4,16] B[8,4]
  const trainable = 2 * (64 + 64 + 64 + 32);
  assert(
    trainableParametersLine(model).startsWith(`trainable params: ${trainable} ||`),
    trainableParametersLine(model),
  );
  model.dispose();
});

Deno.test("a merged model equals the adapted model and unmerge restores the base exactly", () => {
  const model = initModel(CONFIG, { seed: 2 });
  const baseWeights = tf.tidy(() => model.linears().map((l) => l.denseWeight().dataSync() as Float32Array));
  attachLoRA(model, { r: 3, alpha: 6, targetModules: "all-linear", rslora: true });
  randomizeAdapters(model);
  const adapted = logits(model);
  mergeAdapter(model);
  assert(adapterLayers(model).every((l) => (l as LoRALinear).merged));
  const err = relError(logits(model), adapted);
  assert(err < 1e-5, `merged vs adapted relative error ${err}`);
  unmergeAdapter(model);
  const after = model.linears().map((l) =>
    tf.tidy(() => ((l as LoRALinear).base ?? l).denseWeight().dataSync())
  );
  after.forEach((w, i) => assertEquals(w, baseWeights[i]));
  model.dispose();
});

Deno.test("DyLoRA at rank b equals a LoRA whose A, B are the first b rows / columns (scaling alpha / b)", () => {
  const dy = initModel(CONFIG, { seed: 3 });
  const lora = initModel(CONFIG, { seed: 3 });
  attachDyLoRA(dy, { r: 6, alpha: 12, targetModules: ["q_proj", "down_proj"] });
  randomizeAdapters(dy);
  const b = 4;
  setRank(dy, b);
  attachLoRA(lora, { r: b, alpha: 12, targetModules: ["q_proj", "down_proj"] });
  const dyl = adapterLayers(dy) as DyLoRALinear[];
  (adapterLayers(lora) as LoRALinear[]).forEach((l, i) => {
    tf.tidy(() => {
      l.loraA.assign(tf.slice(dyl[i].loraA, [0, 0], [b, -1]));
      l.loraB.assign(tf.slice(dyl[i].loraB, [0, 0], [-1, b]));
    });
  });
  const err = relError(logits(dy), logits(lora));
  assert(err < 1e-6, `relative error ${err}`);
  dy.dispose();
  lora.dispose();
});

function gradsAtRank(mode: "prefix" | "last", b: number): Map<string, Float32Array> {
  const model = initModel(CONFIG, { seed: 4 });
  attachDyLoRA(model, { r: 5, alpha: 10, targetModules: ["v_proj"], mode });
  randomizeAdapters(model);
  model.setTraining(true);
  for (const l of adapterLayers(model) as DyLoRALinear[]) l.trainRank = b;
  const params = model.trainableParams();
  const { grads } = accumulateGradients(model, params, [
    makeMicroBatch([{ ids: IDS[0], labels: IDS[0] }], 0),
  ]);
  const out = new Map(params.map((p, i) => [p.name, grads[i].dataSync() as Float32Array]));
  grads.forEach((g) => g.dispose());
  model.dispose();
  return out;
}

/** Indices of rank components (rows of A [R, I], columns of B [O, R]) with non-zero gradient. */
function activeComponents(g: Map<string, Float32Array>, R: number, I: number, O: number): number[] {
  const active = new Set<number>();
  for (const [name, v] of g) {
    if (name.endsWith("lora_A.weight")) {
      for (let r = 0; r < R; r++) if (v.subarray(r * I, (r + 1) * I).some((x) => x !== 0)) active.add(r);
    } else {
      for (let o = 0; o < O; o++) for (let r = 0; r < R; r++) if (v[o * R + r] !== 0) active.add(r);
    }
  }
  return [...active].sort();
}

Deno.test("DyLoRA gradients reach only components ≤ b (prefix mode) or only the b-th (last mode)", () => {
  const prefix = gradsAtRank("prefix", 3);
  assertEquals(activeComponents(prefix, 5, 16, 8), [0, 1, 2]);
  const last = gradsAtRank("last", 3);
  assertEquals(activeComponents(last, 5, 16, 8), [2]);
});

Deno.test("bad adapter settings are rejected clearly and leave the model untouched", () => {
  const model = initModel(CONFIG, { seed: 5 });
  const n = model.trainableParams().length;
  assertThrows(
    () => attachLoRA(model, { r: 0 }),
    RangeError,
    'attachLoRA: option "r" must be an integer >= 1, received 0',
  );
  assertThrows(() => attachLoRA(model, { targetModules: ["qkv_proj"] }), RangeError, "unknown target module");
  assertThrows(
    () => attachLoRA(model, { rank: 4 } as never),
    TypeError,
    'attachLoRA: option "rank" was renamed to "r"',
  );
  assertThrows(() => attachLoRA(model, { rnk: 4 } as never), TypeError, 'unknown option "rnk"');
  assertThrows(
    () => attachDyLoRA(model, { r: 0 }),
    RangeError,
    'attachDyLoRA: option "r" must be an integer >= 1',
  );
  assertThrows(
    () => attachDyLoRA(model, { maxRank: 4 } as never),
    TypeError,
    'attachDyLoRA: option "maxRank" was renamed to "r"',
  );
  assertEquals(model.trainableParams().length, n);
  attachDyLoRA(model, { r: 4 });
  assertThrows(() => setRank(model, 5), RangeError, "outside 1..4");
  assertThrows(() => setRank(model, 0), RangeError, "outside 1..4");
  assertThrows(() => attachLoRA(model), Error, "already has");
  model.dispose();
});

Deno.test("DyLoRA samples one rank per training step, shared by all layers", () => {
  const model = initModel(CONFIG, { seed: 6 });
  attachDyLoRA(model, { r: 8, seed: 1 });
  const seen = new Set<number>();
  for (let s = 1; s <= 40; s++) {
    model.beginStep(s);
    const ranks = new Set((adapterLayers(model) as DyLoRALinear[]).map((l) => l.trainRank));
    assertEquals(ranks.size, 1);
    seen.add([...ranks][0]);
  }
  assert(seen.size >= 6 && [...seen].every((r) => r >= 1 && r <= 8), [...seen].join());
  model.dispose();
});

Deno.test("attaching and disposing adapters leaves no tensors behind", () => {
  const before = tf.memory().numTensors;
  const a = initModel(CONFIG, { seed: 8 });
  attachLoRA(a, { r: 2, targetModules: "all-linear" });
  a.dispose();
  const b = initModel(CONFIG, { seed: 8 });
  attachDyLoRA(b, { r: 3 });
  b.dispose();
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("a bad alpha or dropout is rejected before the model is changed", () => {
  const model = initModel(CONFIG, { seed: 9 });
  const n = model.trainableParams().length;
  const before = tf.memory().numTensors;
  assertThrows(() => attachLoRA(model, { alpha: 0 }), RangeError, "alpha");
  assertThrows(() => attachDyLoRA(model, { dropout: 1.5 }), RangeError, "dropout");
  assertEquals(model.trainableParams().length, n);
  assertEquals(tf.memory().numTensors, before, "half-built adapters leaked");
  assertEquals(adapterLayers(model).length, 0);
  model.dispose();
});

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { DenseLinear } from "../../lib/models/linear.ts";
import { adapterLayers, attachLoRA, detachAdapter } from "../../lib/adapters/attach.ts";
import { DoRALinear } from "../../lib/adapters/dora.ts";
import { mergeAdapter, unmergeAdapter } from "../../lib/adapters/merge.ts";
import { loadAdapter, saveAdapter } from "../../lib/adapters/peft_format.ts";
import { openSafetensors } from "../../lib/io/safetensors_reader.ts";
import { quantize4bit } from "../../lib/quant/blockwise_4bit.ts";
import { fourBitLinear } from "../../lib/quant/quantized_loaders.ts";

await initEngine();

// Written by tests/reference/dora_ref.py (independent float64 numpy, from PEFT's formula).
const REF = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/dora/dora_ref.json", import.meta.url)),
) as {
  r: number;
  lora_alpha: number;
  scaling: number;
  inputs: Record<"W" | "lora_A" | "lora_B" | "x" | "G", number[][]> & { magnitude: number[] };
  expected: Record<"y" | "merged_weight" | "grad_lora_A" | "grad_lora_B", number[][]> & {
    weight_norm: number[];
    initial_magnitude: number[];
    grad_magnitude: number[];
  };
};

/** Largest |a − b| / max(1, |b|). */
function maxErr(got: ArrayLike<number>, want: number[]): number {
  assertEquals(got.length, want.length);
  let e = 0;
  for (let i = 0; i < want.length; i++) {
    e = Math.max(e, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
  }
  return e;
}

/** A DoRA layer over the reference W with the reference factors and magnitude. */
function referenceLayer(): DoRALinear {
  const base = new DenseLinear("ref.proj", tf.tensor2d(REF.inputs.W), { trainable: false });
  const dora = new DoRALinear(base, { r: REF.r, alpha: REF.lora_alpha });
  tf.tidy(() => {
    dora.loraA.assign(tf.tensor2d(REF.inputs.lora_A));
    dora.loraB.assign(tf.tensor2d(REF.inputs.lora_B));
  });
  return dora;
}

Deno.test("DoRA: the magnitude starts at the row norms of W and the layer equals its base while B = 0", () => {
  const before = tf.memory().numTensors;
  const base = new DenseLinear("ref.proj", tf.tensor2d(REF.inputs.W), { trainable: false });
  const dora = new DoRALinear(base, { r: REF.r, alpha: REF.lora_alpha });
  assert(maxErr(dora.magnitude.dataSync(), REF.expected.initial_magnitude) < 1e-6, "initial magnitude");
  const [y, y0] = tf.tidy(() => {
    const x = tf.tensor2d(REF.inputs.x);
    return [dora.apply(x).dataSync(), base.apply(x).dataSync()];
  });
  assert(maxErr(y, [...y0]) < 1e-6, "B = 0 must give the base output");
  dora.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

Deno.test("DoRA forward, weight norm and merged weight match the float64 reference", () => {
  const before = tf.memory().numTensors;
  const dora = referenceLayer();
  tf.tidy(() => dora.magnitude.assign(tf.tensor1d(REF.inputs.magnitude)));
  const norm = tf.tidy(() => dora.weightNorm().dataSync());
  assert(
    maxErr(norm, REF.expected.weight_norm) < 1e-5,
    `weight norm err ${maxErr(norm, REF.expected.weight_norm)}`,
  );
  const y = tf.tidy(() => dora.apply(tf.tensor2d(REF.inputs.x)).dataSync());
  const e = maxErr(y, REF.expected.y.flat());
  assert(e < 1e-5, `forward err ${e}`);
  const w0 = (dora.base as DenseLinear).weight.dataSync().slice();
  dora.merge();
  assert(dora.merged);
  const merged = (dora.base as DenseLinear).weight.dataSync();
  assert(maxErr(merged, REF.expected.merged_weight.flat()) < 1e-5, "merged weight");
  const ym = tf.tidy(() => dora.apply(tf.tensor2d(REF.inputs.x)).dataSync());
  assert(maxErr(ym, REF.expected.y.flat()) < 1e-5, "merged forward");
  assertEquals(dora.trainableParams(), [], "a merged adapter trains nothing");
  dora.unmerge();
  assertEquals((dora.base as DenseLinear).weight.dataSync(), w0, "unmerge must restore W bit for bit");
  dora.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

Deno.test("DoRA gradients treat the weight norm as a constant (PEFT's detach), matching the reference", () => {
  const before = tf.memory().numTensors;
  const dora = referenceLayer();
  tf.tidy(() => dora.magnitude.assign(tf.tensor1d(REF.inputs.magnitude)));
  const names = dora.trainableParams().map((p) => p.name);
  assertEquals(names, [
    "ref.proj.lora_A.weight",
    "ref.proj.lora_B.weight",
    "ref.proj.lora_magnitude_vector",
  ]);
  tf.tidy(() => {
    const x = tf.tensor2d(REF.inputs.x), g = tf.tensor2d(REF.inputs.G);
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(dora.apply(x), g)) as tf.Scalar, [
      dora.loraA,
      dora.loraB,
      dora.magnitude,
    ]);
    const eA = maxErr(grads[dora.loraA.name].dataSync(), REF.expected.grad_lora_A.flat());
    const eB = maxErr(grads[dora.loraB.name].dataSync(), REF.expected.grad_lora_B.flat());
    const eM = maxErr(grads[dora.magnitude.name].dataSync(), REF.expected.grad_magnitude);
    assert(eA < 1e-5 && eB < 1e-5 && eM < 1e-5, `grad errors A ${eA} B ${eB} m ${eM}`);
  });
  dora.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

Deno.test("DoRA on a 4-bit base equals DoRA on the dequantized weight (forward and gradients)", () => {
  const before = tf.memory().numTensors;
  const O = 8, I = 64;
  const w = new Float32Array(O * I).map((_, i) => Math.sin(i * 0.37) * 0.3);
  const state = quantize4bit(w, {
    shape: [O, I],
    quantize: { type: "nf4", blocksize: 64, doubleQuant: false },
  });
  const q = new DoRALinear(fourBitLinear("q.proj", state), { r: 3, alpha: 6, seed: 5 });
  const dequant = q.base.denseWeight();
  const d = new DoRALinear(new DenseLinear("d.proj", dequant, { trainable: false }), {
    r: 3,
    alpha: 6,
    seed: 5,
  });
  assert(
    maxErr(q.magnitude.dataSync(), [...d.magnitude.dataSync()]) < 1e-6,
    "magnitude from the dequantized weight",
  );
  tf.tidy(() => {
    for (const l of [q, d]) {
      l.loraB.assign(tf.randomNormal([O, 3], 0, 0.3, "float32", 7));
      l.magnitude.assign(tf.mul(l.magnitude, 1.1));
    }
  });
  tf.tidy(() => {
    const x = tf.randomNormal([4, I], 0, 1, "float32", 3) as tf.Tensor2D;
    assert(maxErr(q.apply(x).dataSync(), [...d.apply(x).dataSync()]) < 1e-5, "forward");
    const gq = tf.variableGrads(() => tf.sum(tf.square(q.apply(x))) as tf.Scalar, [
      q.loraA,
      q.loraB,
      q.magnitude,
    ]);
    const gd = tf.variableGrads(() => tf.sum(tf.square(d.apply(x))) as tf.Scalar, [
      d.loraA,
      d.loraB,
      d.magnitude,
    ]);
    for (const [a, b] of [[q.loraA, d.loraA], [q.loraB, d.loraB], [q.magnitude, d.magnitude]]) {
      const e = relError(gq.grads[a.name].dataSync(), gd.grads[b.name].dataSync());
      assert(e < 1e-4, `${a.name} gradient differs by ${e}`);
    }
    const dw = tf.sub(q.denseWeight(), d.denseWeight());
    assert(tf.max(tf.abs(dw)).dataSync()[0] < 1e-5, "merged (dequantized) weights");
  });
  q.dispose();
  d.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

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

Deno.test("attachLoRA({ useDora: true }): PEFT's file layout, save/load round trip, merge and detach", async () => {
  const before = tf.memory().numTensors;
  const model = initModel(CONFIG, { seed: 1 });
  const baseLogits = tf.tidy(() => model.forward(IDS).dataSync());
  attachLoRA(model, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"], useDora: true });
  assertEquals((model as { adapter?: { type: string } }).adapter?.type, "dora");
  assert(adapterLayers(model).every((l) => l instanceof DoRALinear));
  assertEquals(tf.tidy(() => model.forward(IDS).dataSync()), baseLogits, "B = 0 keeps the base logits");
  let seed = 3;
  for (const p of model.trainableParams()) {
    tf.tidy(() =>
      p.variable.assign(tf.add(p.variable, tf.randomNormal(p.variable.shape, 0, 0.2, "float32", seed++)))
    );
  }
  const adapted = tf.tidy(() => model.forward(IDS).dataSync());
  const dir = await Deno.makeTempDir({ prefix: "dora_test_" });
  try {
    await saveAdapter(model, dir);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
    assertEquals([cfg.peft_type, cfg.use_dora, cfg.r, cfg.lora_alpha], ["LORA", true, 4, 8]);
    const file = await openSafetensors(`${dir}/adapter_model.safetensors`);
    const keys = file.names().sort();
    const q0 = "base_model.model.model.layers.0.self_attn.q_proj";
    const v0 = "base_model.model.model.layers.0.self_attn.v_proj";
    assertEquals(keys.filter((k) => k.startsWith(`${q0}.`) || k.startsWith(`${v0}.`)), [
      `${q0}.lora_A.weight`,
      `${q0}.lora_B.weight`,
      `${q0}.lora_magnitude_vector`,
      `${v0}.lora_A.weight`,
      `${v0}.lora_B.weight`,
      `${v0}.lora_magnitude_vector`,
    ]);
    assertEquals(keys.length, 2 * 2 * 3);
    assertEquals(file.info(`${q0}.lora_magnitude_vector`).shape, [16]);
    assertEquals(file.info(`${v0}.lora_magnitude_vector`).shape, [8]); // 2 kv heads × head dim 4
    assertEquals(file.info(`${v0}.lora_B.weight`).shape, [8, 4]);
    file.close();

    const fresh = initModel(CONFIG, { seed: 1 });
    await loadAdapter(fresh, dir);
    const loaded = tf.tidy(() => fresh.forward(IDS).dataSync());
    assert(relError(loaded, adapted) < 1e-6, "loaded DoRA adapter changes the logits");
    assertEquals((fresh as { adapter?: { type: string } }).adapter?.type, "dora");
    fresh.dispose();

    mergeAdapter(model);
    assert(
      relError(tf.tidy(() => model.forward(IDS).dataSync()), adapted) < 1e-5,
      "merge changed the logits",
    );
    unmergeAdapter(model);
    detachAdapter(model);
    assertEquals(tf.tidy(() => model.forward(IDS).dataSync()), baseLogits, "detach restores the base");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  model.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

Deno.test("useDora must be a boolean; a DoRA file without its magnitude is rejected", async () => {
  const model = initModel(CONFIG, { seed: 1 });
  assertThrows(() => attachLoRA(model, { useDora: "yes" as never }), TypeError, "useDora");
  attachLoRA(model, { r: 2, useDora: true });
  const dir = await Deno.makeTempDir({ prefix: "dora_test_" });
  try {
    await saveAdapter(model, dir);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
    // The same tensors claimed as plain LoRA: the magnitude keys are then unknown tensors.
    await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify({ ...cfg, use_dora: false }));
    const fresh = initModel(CONFIG, { seed: 1 });
    let msg = "";
    await loadAdapter(fresh, dir).catch((e) => (msg = (e as Error).message));
    assert(msg.includes("lora_magnitude_vector"), msg);
    assertEquals(
      fresh.trainableParams().length > 0,
      true,
      "a failed load leaves the base trainable as it was",
    );
    fresh.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  model.dispose();
});

Deno.test("QDoRA trains end to end: NF4 base, train() updates A, B and the magnitude, loss falls", async () => {
  const { loadModel } = await import("../../lib/models/load_model.ts");
  const { EMBEDDED_MODEL_DIR } = await import("../../lib/models/embedded.ts");
  const { train } = await import("../../lib/train/trainer.ts");
  const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
  attachLoRA(model, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"], useDora: true });
  const layer = adapterLayers(model)[0] as DoRALinear;
  const m0 = layer.magnitude.dataSync().slice();
  const data = [{ ids: [5, 9, 13, 17, 21, 25, 29, 33] }, { ids: [6, 10, 14, 18, 22, 26, 30, 34] }];
  const history = await train(model, data, { steps: 12, lr: 1e-2, batchSize: 2, measureMemory: false });
  assert(history[11].loss < history[0].loss, `loss ${history[0].loss} -> ${history[11].loss}`);
  const m1 = layer.magnitude.dataSync();
  assert(m1.some((v, i) => Math.abs(v - m0[i]) > 1e-6), "the magnitude vector was trained");
  model.dispose();
});

Deno.test("DoRA with dropout while training follows PEFT: x Wᵀ + (c − 1)·x̃ Wᵀ + c·s·x̃ Aᵀ Bᵀ", () => {
  const before = tf.memory().numTensors;
  const base = new DenseLinear("ref.proj", tf.tensor2d(REF.inputs.W), { trainable: false });
  const dora = new DoRALinear(base, { r: REF.r, alpha: REF.lora_alpha, dropout: 0.5, seed: 0 });
  tf.tidy(() => {
    dora.loraA.assign(tf.tensor2d(REF.inputs.lora_A));
    dora.loraB.assign(tf.tensor2d(REF.inputs.lora_B));
    dora.magnitude.assign(tf.tensor1d(REF.inputs.magnitude));
  });
  dora.training = true;
  const [got, want] = tf.tidy(() => {
    const x = tf.tensor2d(REF.inputs.x);
    const y = dora.apply(x).dataSync();
    // the layer's first dropout mask uses seed 0·7919 + 1 (see LoRALinear)
    const xd = tf.dropout(x, 0.5, undefined, 1) as tf.Tensor2D;
    const c = tf.tensor1d(REF.expected.weight_norm.map((n, i) => REF.inputs.magnitude[i] / n));
    const w = tf.tensor2d(REF.inputs.W);
    const lora = tf.mul(
      tf.matMul(
        tf.matMul(xd, tf.tensor2d(REF.inputs.lora_A), false, true),
        tf.tensor2d(REF.inputs.lora_B),
        false,
        true,
      ),
      REF.scaling,
    );
    const expected = tf.add(
      tf.matMul(x, w, false, true),
      tf.add(tf.mul(tf.matMul(xd, w, false, true), tf.sub(c, 1)), tf.mul(lora, c)),
    );
    return [y, expected.dataSync()];
  });
  assert(maxErr(got, [...want]) < 1e-5, `dropout forward err ${maxErr(got, [...want])}`);
  assert(maxErr(got, REF.expected.y.flat()) > 1e-3, "dropout must change the training output");
  dora.dispose();
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

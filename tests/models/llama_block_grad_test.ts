/**
 * The hand-written block backward (lib/models/llama_block_grad.ts) against the autodiff tape over
 * the same block: input gradient and every trainable tensor's gradient, for Llama (GQA, padding
 * mask, packed positions), Qwen2 (q/k/v biases, one trainable), Gemma (tanh-GELU, `1 + w` norms),
 * a 4-bit base, trainable norms, and LoRA on a subset of the projections; plus the refusals.
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";
const embeddedModel = () => loadModel(EMBEDDED_MODEL_DIR);
import { loadModel } from "../../lib/models/load_model.ts";
import { attachDyLoRA, attachLoRA } from "../../lib/adapters/attach.ts";
import {
  blockBackward,
  blockForwardSaving,
  blockGradSupport,
  blockSavedBytes,
} from "../../lib/models/llama_block_grad.ts";
import type { ForwardOptions, LlamaForCausalLM } from "../../lib/models/llama.ts";
import { makeFamilyCheckpoint } from "../../scripts/make_family_checkpoint.ts";
import { adapterLayers } from "../../lib/adapters/attach.ts";
import { restoreLayerRng, snapshotLayerRng } from "../../lib/train/layer_rng.ts";

await initEngine({ backend: "cpu" });

/** Gives every LoRA B (zero at init) random values so that every gradient is non-trivial. */
function randomizeB(model: LlamaForCausalLM): void {
  let seed = 11;
  for (const l of adapterLayers(model)) {
    tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 0.05, "float32", seed++)));
  }
}

function maxRel(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => {
    const diff = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
    const scale = tf.max(tf.abs(b)).dataSync()[0];
    return diff / Math.max(scale, 1e-12);
  });
}

/** Compares hand-written and tape gradients of every block for one random `dOut`. */
function compareBlocks(model: LlamaForCausalLM, ids: number[][], options: ForwardOptions = {}, tol = 1e-4) {
  const before = tf.memory().numTensors;
  const B = ids.length, T = ids[0].length;
  const ctx = model.context(B, T, options);
  const idsT = tf.tensor2d(ids, [B, T], "int32");
  let h = model.embed(idsT);
  let checked = 0;
  for (const layer of model.layers) {
    const params = layer.trainableParams();
    assert(params.length > 0, "the block trains something");
    const dOut = tf.randomNormal(h.shape, 0, 1, "float32", 7 + layer.index) as tf.Tensor3D;
    const rng = snapshotLayerRng(model); // LoRA dropout: the hand-written pass draws the same masks
    const tape = tf.engine().gradients(
      () => layer.forward(h, ctx),
      [h, ...params.map((p) => p.variable)],
      dOut,
      true,
    );
    restoreLayerRng(model, rng);
    const { out, saved } = blockForwardSaving(layer, h, ctx);
    assert(maxRel(out, tape.value) < 1e-5, `layer ${layer.index}: forward output`);
    const { dh, grads } = blockBackward(layer, saved, dOut, ctx);
    const e = maxRel(dh, tape.grads[0]);
    assert(e < tol, `layer ${layer.index}: input gradient rel. error ${e}`);
    assertEquals(grads.size, params.length, `layer ${layer.index}: one gradient per trainable tensor`);
    params.forEach((p, i) => {
      const g = grads.get(p.variable);
      assert(g, `${p.name}: no gradient`);
      const err = maxRel(g, tape.grads[i + 1]);
      assert(err < tol, `${p.name}: gradient rel. error ${err}`);
      checked++;
    });
    tf.dispose([dOut, tape.value, ...tape.grads, dh, out, ...grads.values()]);
    restoreLayerRng(model, rng);
    const next = tf.tidy(() => layer.forward(h, ctx));
    h.dispose();
    h = next;
  }
  tf.dispose([h, idsT, ctx.cos, ctx.sin, ctx.mask]);
  assertEquals(tf.memory().numTensors, before, "no tensor leaked");
  return checked;
}

Deno.test("llama (embedded, GQA): hand-written gradients equal the tape's, with padding", async () => {
  const model = await embeddedModel();
  attachLoRA(model, { r: 4, alpha: 8 });
  randomizeB(model);
  assertEquals(blockGradSupport(model.layers[0]), null);
  const n = compareBlocks(model, [[5, 9, 2, 7, 1, 3], [4, 4, 8, 2, 6, 0]], {
    attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]],
  });
  assertEquals(n, model.layers.length * 14);
  model.dispose();
});

Deno.test("llama: packed rows (per-row positions, block-diagonal mask) and trainable norms", async () => {
  const model = await embeddedModel();
  attachLoRA(model, { r: 2, targetModules: ["q_proj", "v_proj", "down_proj"] });
  randomizeB(model);
  for (const l of model.layers) {
    l.inputNorm.trainable = true;
    l.postAttentionNorm.trainable = true;
    tf.tidy(() =>
      l.inputNorm.weight.assign(tf.randomUniform([model.config.hiddenSize], 0.5, 1.5, "float32", 3))
    );
  }
  assertEquals(blockGradSupport(model.layers[0]), null);
  compareBlocks(model, [[5, 9, 2, 7, 1, 3]], {
    positionIds: [[0, 1, 2, 0, 1, 2]],
    segmentIds: [[0, 0, 0, 1, 1, 1]],
  });
  model.dispose();
});

Deno.test("qwen2 (biases, one trained) and gemma (tanh-GELU, 1 + w norms), dense and 4-bit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const family of ["qwen2", "gemma"]) {
      const { dir: ckpt } = await makeFamilyCheckpoint(family, `${dir}/${family}`);
      for (const quantize of [false, "nf4"] as const) {
        const model = await loadModel(ckpt, quantize ? { quantize } : {});
        attachLoRA(model, { r: 4 });
        randomizeB(model);
        const bias = model.layers[0].biases.q_proj;
        if (bias) bias.trainable = true;
        assertEquals(blockGradSupport(model.layers[0]), null, `${family} ${quantize}`);
        compareBlocks(model, [[3, 17, 40, 8, 2], [9, 9, 1, 60, 33]]);
        model.dispose();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LoRA dropout while training: the same masks and gradients as the tape (seeds replayed)", async () => {
  const model = await embeddedModel();
  attachLoRA(model, { r: 4, alpha: 8, dropout: 0.3 });
  randomizeB(model);
  model.setTraining(true);
  compareBlocks(model, [[5, 9, 2, 7, 1, 3], [4, 4, 8, 2, 6, 0]]);
  model.dispose();
});

Deno.test("blocks that need the tape are named: dense trainable base, DyLoRA, DoRA", async () => {
  const model = await embeddedModel();
  assert(/\(DenseLinear\) trains through the tape/.test(blockGradSupport(model.layers[0]) ?? ""));
  attachDyLoRA(model, { r: 4 });
  assert(/\(DyLoRALinear\) trains through the tape/.test(blockGradSupport(model.layers[0]) ?? ""));
  model.dispose();
  const m2 = await embeddedModel();
  attachLoRA(m2, { r: 4, dropout: 0.1 });
  m2.setTraining(true);
  assertEquals(blockGradSupport(m2.layers[0]), null, "LoRA dropout runs hand-written too");
  m2.dispose();
  const m3 = await embeddedModel();
  attachLoRA(m3, { r: 4, useDora: true });
  assert(/carries a dora adapter/.test(blockGradSupport(m3.layers[0]) ?? ""));
  m3.dispose();
});

Deno.test("blockSavedBytes counts what the forward keeps", async () => {
  const model = await embeddedModel();
  attachLoRA(model, { r: 4 });
  const B = 2, T = 5;
  const ctx = model.context(B, T);
  const h = tf.randomNormal([B, T, model.config.hiddenSize]) as tf.Tensor3D;
  const before = tf.memory().numBytes;
  const { out, saved } = blockForwardSaving(model.layers[0], h, ctx);
  const kept = tf.memory().numBytes - before - out.size * 4;
  assertEquals(kept, blockSavedBytes(model.config, B, T, Array(7).fill(4)));
  const dOut = tf.onesLike(out) as tf.Tensor3D;
  const { dh, grads } = blockBackward(model.layers[0], saved, dOut, ctx);
  tf.dispose([h, out, dOut, dh, ...grads.values(), ctx.cos, ctx.sin, ctx.mask]);
  model.dispose();
});

/**
 * Model families end to end on a checkpoint generated with each family's real tensor names and
 * config keys (scripts/make_family_checkpoint.ts): logits against the float64 numpy reference
 * written from Transformers' modeling code (tests/reference/families_ref.py, fixture in
 * tests/fixtures/families/), 4-bit loading, LoRA, save and merge, and the refusals.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { mergeAdapter } from "../../lib/adapters/merge.ts";
import { loadAdapter, saveAdapter } from "../../lib/adapters/peft_format.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";
import { FAMILY_PRESETS, makeFamilyCheckpoint } from "../../scripts/make_family_checkpoint.ts";
import { openSafetensors } from "../../lib/io/safetensors_reader.ts";
import { writeSafetensors } from "../../lib/io/safetensors_writer.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";

await initEngine({ backend: "cpu" });
const FIXTURES = new URL("../fixtures/families/", import.meta.url).pathname;

async function fixture(family: string): Promise<{ input_ids: number[][]; logits: number[][][] }> {
  return JSON.parse(await Deno.readTextFile(`${FIXTURES}${family}_logits.json`));
}

function logits(model: LlamaForCausalLM, ids: number[][]): Float32Array {
  return tf.tidy(() => model.forward(ids).dataSync() as Float32Array);
}

/** Rewrites one field of a checkpoint's config.json. */
async function patchConfig(dir: string, patch: Record<string, unknown>): Promise<void> {
  const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...c, ...patch }));
}

for (const family of Object.keys(FAMILY_PRESETS)) {
  Deno.test(`${family}: logits match the float64 reference to relative error < 1e-4`, async () => {
    const dir = await Deno.makeTempDir();
    const before = tf.memory().numTensors;
    try {
      await makeFamilyCheckpoint(family, dir);
      const ref = await fixture(family);
      const model = await loadModel(dir);
      const err = relError(logits(model, ref.input_ids), Float32Array.from(ref.logits.flat(2)));
      assert(err < 1e-4, `${family}: relative error ${err}`);
      model.dispose();
      assertEquals(tf.memory().numTensors, before, "tensors leaked");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${family}: 4-bit load, LoRA, adapter save/load, merge and checkpoint save round trip`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      await makeFamilyCheckpoint(family, dir);
      const ref = await fixture(family);
      const want = Float32Array.from(ref.logits.flat(2));
      const ids = ref.input_ids;

      // NF4: the biases and norms stay exact, each weight carries ~10% (of its largest entry) 4-bit
      // error, which the two random layers amplify in the logits; a wrong split would be ~100%.
      const q = await loadModel(dir, { quantize: "nf4" });
      const qErr = relError(logits(q, ids), want);
      assert(qErr > 1e-5 && qErr < 0.5, `nf4 relative error ${qErr}`);
      const wq = q.layers[0].linears.v_proj.denseWeight(), wd = await loadModel(dir);
      const wv = wd.layers[0].linears.v_proj.denseWeight();
      assert(relError(wq.dataSync(), wv.dataSync()) < 0.2, "v_proj is the 4-bit copy of its own rows");
      tf.dispose([wq, wv]);
      wd.dispose();
      attachLoRA(q, { r: 2, targetModules: "all-linear" });
      for (const p of q.trainableParams()) {
        if (p.name.includes("lora_B")) {
          p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.05, "float32", 3));
        }
      }
      const adapted = logits(q, ids);
      assert(relError(adapted, logits(q, ids)) === 0, "forward is deterministic");
      const adapterDir = `${dir}/adapter`;
      await saveAdapter(q, adapterDir);
      mergeAdapter(q, { dequantize: true });
      assert(relError(logits(q, ids), adapted) < 1e-5, "merging a 4-bit base kept the logits");
      q.dispose();

      // Dense base: the saved adapter gives the same update; merging and saving keeps the biases.
      const dense = await loadModel(dir);
      await loadAdapter(dense, adapterDir);
      const viaAdapter = logits(dense, ids);
      mergeAdapter(dense);
      assert(relError(logits(dense, ids), viaAdapter) < 1e-5, "merge kept the logits");
      const saved = `${dir}/merged`;
      await saveCheckpoint(dense, saved);
      const st = await openSafetensors(`${saved}/model.safetensors`);
      const names = st.names();
      st.close();
      const src = await openSafetensors(`${dir}/model.safetensors`);
      assertEquals(
        names.sort(),
        src.names().sort(),
        "the save has exactly the family's tensors (biases too)",
      );
      src.close();
      const back = await loadModel(saved);
      assert(relError(logits(back, ids), viaAdapter) < 1e-5, "saved merged checkpoint reloads");
      dense.dispose();
      back.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("qwen2: biases are read (zeroing them changes the logits) and initModel creates zero biases", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeFamilyCheckpoint("qwen2", dir);
    const model = await loadModel(dir);
    const ids = [[1, 2, 3, 4]];
    const a = logits(model, ids);
    const b0 = model.layers[0].biases.q_proj!;
    assertEquals(b0.trainableParams()[0].name, "model.layers.0.self_attn.q_proj.bias");
    for (const l of model.layers) {
      for (const b of Object.values(l.biases)) b!.variable.assign(tf.zerosLike(b!.variable));
    }
    assert(relError(logits(model, ids), a) > 1e-3, "the biases must move the logits");
    assertEquals(Object.keys(model.layers[1].biases).sort(), ["k_proj", "q_proj", "v_proj"]);
    model.setBaseTrainable(false);
    assert(!model.trainableParams().some((p) => p.name.endsWith(".bias")), "frozen base freezes biases");
    model.dispose();
    const fresh = initModel(FAMILY_PRESETS.qwen2.config, { seed: 1 });
    assertEquals(fresh.layers[0].biases.v_proj!.variable.dataSync().every((v) => v === 0), true);
    fresh.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qwen2: unimplemented config keys and unused or missing tensors are refused by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeFamilyCheckpoint("qwen2", dir);
    await patchConfig(dir, { use_sliding_window: true });
    await assertRejects(() => loadModel(dir), RangeError, "use_sliding_window: true");
    await patchConfig(dir, {
      use_sliding_window: false,
      layer_types: ["full_attention", "sliding_attention"],
    });
    await assertRejects(() => loadModel(dir), RangeError, "layer_types");
    await patchConfig(dir, { layer_types: ["full_attention", "full_attention"], attention_bias: true });
    // attention_bias asks for an o_proj bias the checkpoint does not have.
    await assertRejects(() => loadModel(dir), RangeError, "model.layers.0.self_attn.o_proj.bias");
    await patchConfig(dir, { attention_bias: false, model_type: "llama" });
    // As a Llama config the q/k/v biases are tensors the model does not use.
    await assertRejects(() => loadModel(dir), RangeError, "q_proj.bias");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gemma: 1 + weight norms, sqrt(hidden) embeddings and head_dim 256 are read from the config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeFamilyCheckpoint("gemma", dir);
    const model = await loadModel(dir);
    assertEquals(model.config.headDim, 256);
    assertEquals(model.config.hiddenAct, "gelu_tanh");
    assertEquals(model.config.embedScale, Math.sqrt(32));
    assert(model.norm.unitOffset && model.lmHead === null, "gemma norms add 1, embeddings are tied");
    model.dispose();
    const fresh = initModel(FAMILY_PRESETS.gemma.config, { seed: 1 });
    assert(fresh.norm.weight.dataSync().every((v) => v === 0), "HF inits Gemma norm offsets to 0");
    fresh.dispose();
    await patchConfig(dir, { hidden_activation: "gelu" });
    await assertRejects(() => loadModel(dir), RangeError, 'hidden_activation "gelu"');
    await patchConfig(dir, { hidden_activation: "gelu_pytorch_tanh", final_logit_softcapping: 30 });
    await assertRejects(() => loadModel(dir), RangeError, "final_logit_softcapping");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("phi3: fused qkv_proj / gate_up_proj: PEFT names on the fused modules both ways", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeFamilyCheckpoint("phi3", dir);
    const ids = [[1, 5, 9, 30, 2]];
    // An adapter as PEFT writes it for Phi-3: one A [r, D] and B [(H + 2G)·Dh, r] on layer 0's qkv_proj.
    const r = 2, alpha = 4, D = 32, O = (4 + 2 * 2) * 8;
    const A = Float32Array.from({ length: r * D }, (_, i) => Math.sin(i) * 0.3);
    const B = Float32Array.from({ length: O * r }, (_, i) => Math.cos(i) * 0.3);
    const adapter = `${dir}/peft`;
    await Deno.mkdir(adapter);
    const key = "base_model.model.model.layers.0.self_attn.qkv_proj";
    await writeSafetensors(`${adapter}/adapter_model.safetensors`, [
      { name: `${key}.lora_A.weight`, dtype: "F32", shape: [r, D], data: A },
      { name: `${key}.lora_B.weight`, dtype: "F32", shape: [O, r], data: B },
    ]);
    await Deno.writeTextFile(
      `${adapter}/adapter_config.json`,
      JSON.stringify({ peft_type: "LORA", r, lora_alpha: alpha, target_modules: ["qkv_proj"] }),
    );
    const model = await loadModel(dir);
    await loadAdapter(model, adapter);
    const got = logits(model, ids);
    // The same update applied to the fused weight on disk: W + (alpha / r)·B·A.
    const st = await openSafetensors(`${dir}/model.safetensors`);
    const names = st.names();
    const tensors = [];
    for (const n of names) {
      const data = await st.readFloat32(n);
      if (n === "model.layers.0.self_attn.qkv_proj.weight") {
        for (let o = 0; o < O; o++) {
          for (let i = 0; i < D; i++) {
            let s = 0;
            for (let j = 0; j < r; j++) s += B[o * r + j] * A[j * D + i];
            data[o * D + i] += (alpha / r) * s;
          }
        }
      }
      tensors.push({ name: n, dtype: "F32" as const, shape: st.info(n).shape, data });
    }
    st.close();
    const merged = `${dir}/merged`;
    await Deno.mkdir(merged);
    await writeSafetensors(`${merged}/model.safetensors`, tensors);
    await Deno.copyFile(`${dir}/config.json`, `${merged}/config.json`);
    const reference = await loadModel(merged);
    const err = relError(got, logits(reference, ids));
    assert(err < 1e-5, `fused PEFT adapter vs merged weight: ${err}`);
    reference.dispose();
    // Our export writes fused names at rank 3r with alpha scaled, and reads back to the same logits.
    await saveAdapter(model, `${dir}/ours`);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/ours/adapter_config.json`));
    assertEquals(cfg.target_modules, ["qkv_proj"]);
    assertEquals([cfg.r, cfg.lora_alpha], [3 * r, 3 * alpha]);
    const again = await loadModel(dir);
    await loadAdapter(again, `${dir}/ours`);
    assert(relError(logits(again, ids), got) < 1e-5, "our fused export reloads to the same logits");
    again.dispose();
    model.dispose();
    // targetModules take the PEFT names; a partial rotary config is refused by name.
    const m2 = await loadModel(dir);
    attachLoRA(m2, { r: 2, targetModules: ["qkv_proj", "gate_up_proj"] });
    assertEquals(m2.adapter!.modules.length, 2 * 5);
    m2.dispose();
    // A bitsandbytes NF4 checkpoint of the fused weights loads as 4-bit parts: the same codes and
    // scales as quantizing the parts on load (the parts start on absmax block boundaries).
    const nf4 = { type: "nf4", doubleQuant: false, blocksize: 64 } as const;
    await quantizeCheckpoint(dir, `${dir}/bnb`, { quantize: nf4 });
    const fromDisk = await loadModel(`${dir}/bnb`), onLoad = await loadModel(dir, { quantize: nf4 });
    assertEquals(fromDisk.layers[0].linears.k_proj.storage()[0].dtype, "nf4");
    assert(relError(logits(fromDisk, ids), logits(onLoad, ids)) < 1e-6, "bnb fused split == quantized parts");
    fromDisk.dispose();
    onLoad.dispose();
    await patchConfig(dir, { partial_rotary_factor: 0.75 });
    await assertRejects(() => loadModel(dir), RangeError, "partial_rotary_factor: 0.75");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("llama attention_bias / mlp_bias give biased projections that save and reload; a sliding window caps positions", async () => {
  const config = {
    model_type: "llama",
    vocab_size: 32,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    attention_bias: true,
    mlp_bias: true,
  };
  const model = initModel(config, { seed: 2 });
  assertEquals(Object.keys(model.layers[0].biases).sort(), [
    "down_proj",
    "gate_proj",
    "k_proj",
    "o_proj",
    "q_proj",
    "up_proj",
    "v_proj",
  ]);
  for (const b of Object.values(model.layers[0].biases)) {
    b!.variable.assign(tf.randomNormal(b!.variable.shape, 0, 0.5, "float32", 4));
  }
  const dir = await Deno.makeTempDir();
  try {
    await saveCheckpoint(model, dir);
    const back = await loadModel(dir);
    assert(relError(logits(back, [[1, 2, 3]]), logits(model, [[1, 2, 3]])) < 1e-6, "biases saved and read");
    back.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  model.dispose();
  const windowed = initModel({
    ...config,
    model_type: "mistral",
    max_position_embeddings: 4096,
    sliding_window: 64,
  });
  assertEquals(windowed.config.maxPositionEmbeddings, 64);
  windowed.dispose();
});

/**
 * exportMerged / `deno task merge`: a complete HF checkpoint (base dtype, shards + index, config
 * without quantization_config, tokenizer and generation config copied) whose logits, loaded back,
 * are the adapted model's to bf16 precision; the PEFT adapter names its base.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { saveAdapter } from "../../lib/adapters/peft_format.ts";
import { exportMerged } from "../../lib/models/export_merged.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";
import { makeFamilyCheckpoint } from "../../scripts/make_family_checkpoint.ts";
import { mergeCheckpoint, parseMergeArgs } from "../../scripts/merge.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";

await initEngine({ backend: "cpu" });
const IDS = [[1, 42, 95, 7, 60, 3], [1, 5, 6, 7, 8, 9]];

function logits(model: LlamaForCausalLM): Float32Array {
  return tf.tidy(() => model.forward(IDS).dataSync() as Float32Array);
}

async function adaptedBase(root: string): Promise<LlamaForCausalLM> {
  const base = `${root}/base`;
  await makeFamilyCheckpoint("qwen2", base);
  // A bf16 base with a tokenizer and a generation config, quantized to bitsandbytes NF4 on disk.
  const config = JSON.parse(await Deno.readTextFile(`${base}/config.json`));
  await Deno.writeTextFile(`${base}/config.json`, JSON.stringify({ ...config, torch_dtype: "bfloat16" }));
  await Deno.writeTextFile(`${base}/generation_config.json`, JSON.stringify({ eos_token_id: 2, top_p: 0.8 }));
  await Deno.writeTextFile(`${base}/tokenizer_config.json`, JSON.stringify({ eos_token: "</s>" }));
  await Deno.writeTextFile(`${base}/tokenizer.json`, "{}");
  await quantizeCheckpoint(base, `${root}/nf4`);
  const q = JSON.parse(await Deno.readTextFile(`${root}/nf4/config.json`));
  assert(q.quantization_config, "the 4-bit base carries a quantization_config");
  const model = await loadModel(`${root}/nf4`);
  attachLoRA(model, { r: 4, targetModules: "all-linear" });
  for (const p of model.trainableParams()) {
    if (p.name.includes("lora_B")) {
      p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.05, "float32", 7));
    }
  }
  return model;
}

Deno.test("exportMerged writes a sharded bf16 HF checkpoint that reloads to the adapted logits", async () => {
  const root = await Deno.makeTempDir();
  try {
    const model = await adaptedBase(root);
    const want = logits(model);
    const before = tf.memory().numTensors;
    const r = await exportMerged(model, `${root}/merged`, { maxShardBytes: 20_000 });
    assertEquals(tf.memory().numTensors, before, "export leaked tensors");
    assertEquals(r.dtype, "BF16");
    assert(r.shards >= 2, `expected shards, got ${r.shards}`);
    const files = [...Deno.readDirSync(`${root}/merged`)].map((e) => e.name).sort();
    for (
      const f of ["config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json"]
    ) {
      assert(files.includes(f), `${f} missing: ${files}`);
    }
    assert(!files.includes("model.safetensors"), "sharded export has no single file");
    const index = JSON.parse(await Deno.readTextFile(`${root}/merged/model.safetensors.index.json`));
    assertEquals(index.metadata.total_size, r.bytes);
    assert(index.weight_map["model.layers.0.self_attn.q_proj.bias"], "biases exported");
    const config = JSON.parse(await Deno.readTextFile(`${root}/merged/config.json`));
    assertEquals(config.quantization_config, undefined);
    assertEquals(config.torch_dtype, "bfloat16");
    const back = await loadModel(`${root}/merged`);
    const got = logits(back);
    const err = relError(got, want);
    assert(err < 2e-2, `bf16 round trip relative error ${err}`);
    assert(!back.linears().some((l) => "kind" in l), "the export is a plain model (no adapter)");
    assert(model.adapter !== undefined, "the exported model keeps its adapter");
    back.dispose();
    // F32 export: the same logits to fp32 rounding (the merge itself is exact).
    await exportMerged(model, `${root}/f32`, { dtype: "F32" });
    const exact = await loadModel(`${root}/f32`);
    const e32 = relError(logits(exact), want);
    assert(e32 < 1e-5, `f32 round trip relative error ${e32}`);
    exact.dispose();
    model.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deno task merge (mergeCheckpoint): base + PEFT adapter -> checkpoint; adapter names its base", async () => {
  const root = await Deno.makeTempDir();
  try {
    const model = await adaptedBase(root);
    await saveAdapter(model, `${root}/adapter`);
    const peft = JSON.parse(await Deno.readTextFile(`${root}/adapter/adapter_config.json`));
    assertEquals(peft.base_model_name_or_path, `${root}/nf4`);
    const want = logits(model);
    model.dispose();
    // The QLoRA workflow: the 4-bit base the adapter was trained on, dequantized into the export.
    const args = parseMergeArgs([`${root}/nf4`, `${root}/adapter`, `${root}/out`, "--dtype", "F32"]);
    const r = await mergeCheckpoint(args);
    assertEquals(r.copied.sort(), ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]);
    const back = await loadModel(`${root}/out`);
    const err = relError(logits(back), want);
    assert(err < 1e-5, `merged checkpoint relative error ${err}`);
    back.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

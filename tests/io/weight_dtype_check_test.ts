/**
 * Issue 12, "accepted silently": a checkpoint whose BF16 weights are labelled F16 or I16 in the
 * safetensors header loaded garbage. Generated checkpoints: the same BF16 bytes relabelled are
 * refused by loadModel (dense and quantize-on-load), quantizeCheckpoint and loadAdapter, naming the
 * tensor and the file; the genuine F16 and BF16 saves of the same model still load.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";
import { decodeSafetensors } from "../../lib/io/safetensors_reader.ts";
import { encodeSafetensors } from "../../lib/io/safetensors_writer.ts";
import type { SafetensorsDtype } from "../../lib/io/dtypes.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { loadAdapter, saveAdapter } from "../../lib/adapters/peft_format.ts";
import { checkNotRelabelledBf16 } from "../../lib/io/weight_dtype_check.ts";

await initEngine({ backend: "cpu" });
const CONFIG = {
  model_type: "llama",
  vocab_size: 64,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};

/** Rewrites every tensor of dtype `from` in `file` as `to`, keeping the bytes (a wrong header). */
async function relabel(file: string, from: SafetensorsDtype, to: SafetensorsDtype): Promise<void> {
  const { metadata, tensors } = decodeSafetensors(await Deno.readFile(file), file);
  await Deno.writeFile(
    file,
    encodeSafetensors(
      [...tensors].map(([name, t]) => ({
        name,
        dtype: t.dtype === from ? to : t.dtype,
        shape: t.shape,
        data: t.data,
      })),
      { metadata: { ...metadata } },
    ),
  );
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected a refusal");
}

Deno.test("BF16 weights labelled F16 or I16 are refused naming the tensor and the file; genuine F16/BF16 load", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_relabel_" });
  const before = tf.memory().numTensors;
  const m = initModel(CONFIG, { seed: 5 });
  try {
    for (const dtype of ["BF16", "F16"] as const) {
      await saveCheckpoint(m, `${root}/${dtype}`, { dtype });
      const back = await loadModel(`${root}/${dtype}`); // the genuine saves are not flagged
      back.dispose();
      (await loadModel(`${root}/${dtype}`, { quantize: "nf4" })).dispose();
    }
    for (const to of ["F16", "I16"] as const) {
      const dir = `${root}/as-${to}`;
      await saveCheckpoint(m, dir, { dtype: "BF16" });
      await relabel(`${dir}/model.safetensors`, "BF16", to);
      for (const options of [{}, { quantize: "nf4" as const }]) {
        const msg = await errorOf(loadModel(dir, options));
        assert(msg.includes(`${dir}/model.safetensors`), msg);
        assert(msg.includes('"model.') || msg.includes('"lm_head'), `names the tensor: ${msg}`);
        assert(msg.includes(`labelled ${to}`) && msg.includes("BF16"), msg);
      }
      if (to === "F16") {
        const msg = await errorOf(quantizeCheckpoint(dir, `${root}/q-${to}`));
        assert(msg.includes(`${dir}/model.safetensors`) && msg.includes("BF16"), msg);
      }
    }
  } finally {
    m.dispose();
  }
  assertEquals(tf.memory().numTensors, before, "tensors leaked by refused loads");
  await Deno.remove(root, { recursive: true });
});

Deno.test("an adapter whose factors are labelled I32 is refused naming the tensor and the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbtune_relabel_adapter_" });
  const m = attachLoRA(initModel(CONFIG, { seed: 5 }), { r: 2, targetModules: ["q_proj"] });
  await saveAdapter(m, dir);
  m.dispose();
  await relabel(`${dir}/adapter_model.safetensors`, "F32", "I32");
  const base = initModel(CONFIG, { seed: 5 });
  const msg = await errorOf(loadAdapter(base, dir));
  base.dispose();
  assert(msg.includes(`${dir}/adapter_model.safetensors`) && msg.includes("lora_A.weight"), msg);
  assert(msg.includes("labelled I32") && msg.includes("F32?"), msg);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the F16 fingerprint spares real weight spreads: std 0.02, std 1 embeddings, vectors of ones", () => {
  const info = (shape: number[]) => ({
    file: "m.safetensors",
    dtype: "F16" as const,
    shape,
    byteOffset: 8,
    byteLength: 0,
  });
  let s = 1;
  const normal = (std: number) => {
    // Box-Muller over a fixed LCG: deterministic
    const u = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) + 1) / (2 ** 31 + 1);
    return std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  };
  for (const std of [0.02, 0.1, 1]) {
    checkNotRelabelledBf16("w", info([64, 64]), Float32Array.from({ length: 4096 }, () => normal(std)));
  }
  checkNotRelabelledBf16("norm", info([4096]), new Float32Array(4096).fill(1)); // vectors are not judged
  let msg = "";
  try {
    checkNotRelabelledBf16(
      "w",
      info([64, 64]),
      Float32Array.from({ length: 4096 }, () => 0.25 + Math.abs(normal(1)) % 3),
    );
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes('"w" in m.safetensors is labelled F16'), msg);
});

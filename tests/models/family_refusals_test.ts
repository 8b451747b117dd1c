/**
 * Checkpoints the engine cannot run faithfully are refused with the file, the field and the fix:
 * GPTQ Phi-3 (fused qkv_proj / gate_up_proj cannot be split into GPTQ parts) and Llama / Mistral
 * configs with a non-zero `attention_dropout` (training with attention dropout is not implemented).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { parseLlamaConfig } from "../../lib/models/llama_config.ts";
import { makeFamilyCheckpoint } from "../../scripts/make_family_checkpoint.ts";

await initEngine({ backend: "cpu" });

async function patchConfig(dir: string, patch: Record<string, unknown>): Promise<void> {
  const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...c, ...patch }));
}

const LLAMA = {
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};

Deno.test("a GPTQ Phi-3 checkpoint (quantization_config or quantize_config.json) is refused, saying what to do", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeFamilyCheckpoint("phi3", dir);
    const before = tf.memory().numTensors;
    const gptq = { quant_method: "gptq", bits: 4, group_size: 32, desc_act: false, sym: true };
    await patchConfig(dir, { quantization_config: gptq });
    const e = await assertRejects(() => loadModel(dir), RangeError, `${dir} is pre-quantized (gptq)`);
    for (const part of ["qkv_proj / gate_up_proj", "phi3", '{ quantize: "nf4" }']) {
      if (!e.message.includes(part)) throw new Error(`message lacks "${part}": ${e.message}`);
    }
    const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    delete c.quantization_config;
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(c));
    await Deno.writeTextFile(`${dir}/quantize_config.json`, JSON.stringify({ bits: 4, group_size: 32 }));
    await assertRejects(() => loadModel(dir), RangeError, "fused qkv_proj / gate_up_proj (phi3)");
    await Deno.remove(`${dir}/quantize_config.json`);
    const m = await loadModel(dir); // the same checkpoint without the GPTQ marks loads
    m.dispose();
    assertEquals(tf.memory().numTensors, before, "tensors leaked");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const modelType of ["llama", "mistral"]) {
  Deno.test(`${modelType}: attention_dropout > 0 is refused naming the file and field; 0.0 loads`, async () => {
    assertThrows(
      () => parseLlamaConfig({ ...LLAMA, model_type: modelType, attention_dropout: 0.1 }, "x/config.json"),
      RangeError,
      "x/config.json: attention_dropout: 0.1 is not implemented",
    );
    assertThrows(
      () => parseLlamaConfig({ ...LLAMA, model_type: modelType, attention_dropout: "0.1" }, "x/config.json"),
      RangeError,
      'x/config.json: attention_dropout must be a number in [0, 1], got "0.1"',
    );
    parseLlamaConfig({ ...LLAMA, model_type: modelType, attention_dropout: 0.0 }, "x/config.json");
    const dir = await Deno.makeTempDir();
    try {
      const m = initModel({ ...LLAMA, model_type: modelType }, { seed: 1 });
      await saveCheckpoint(m, dir);
      m.dispose();
      await patchConfig(dir, { attention_dropout: 0.05 });
      const e = await assertRejects(
        () => loadModel(dir),
        RangeError,
        `${dir}/config.json: attention_dropout: 0.05`,
      );
      if (!e.message.includes("set attention_dropout to 0.0")) throw new Error(e.message);
      await patchConfig(dir, { attention_dropout: 0.0 });
      (await loadModel(dir)).dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

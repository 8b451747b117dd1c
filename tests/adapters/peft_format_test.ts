import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { openSafetensors } from "../../lib/io/safetensors_reader.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { attachDyLoRA, attachLoRA, setRank } from "../../lib/adapters/attach.ts";
import { exportRank, loadAdapter, saveAdapter } from "../../lib/adapters/peft_format.ts";
import { writeSafetensors } from "../../lib/io/safetensors_writer.ts";

await initEngine();
const BASE = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;
const PEFT = new URL("../fixtures/peft", import.meta.url).pathname;
const EXPECTED = JSON.parse(await Deno.readTextFile(`${PEFT}/expected_keys.json`));

function weightsOf(model: Awaited<ReturnType<typeof loadModel>>): Float32Array {
  return tf.tidy(() =>
    tf.concat(model.linears().map((l) => tf.reshape(l.denseWeight(), [-1]))).dataSync() as Float32Array
  );
}

for (const name of ["tiny-llama-lora-qv", "tiny-llama-lora-all-rslora"]) {
  Deno.test(`a PEFT adapter written by the reference script (${name}) loads and gives the reference logits`, async () => {
    const want = JSON.parse(await Deno.readTextFile(`${PEFT}/${name}/expected_logits.json`));
    const model = await loadModel(BASE);
    const base = model.forward(want.input_ids).dataSync();
    await loadAdapter(model, `${PEFT}/${name}`);
    const got = model.forward(want.input_ids).dataSync();
    const ref = Float32Array.from((want.logits as number[][][]).flat(2));
    const err = relError(got, ref);
    assert(err < 1e-4, `relative error ${err}`);
    assert(relError(base, ref) > 1e-2, "the adapter should change the logits");
    model.dispose();
  });
}

Deno.test("saveAdapter() writes exactly PEFT's key names, dtypes, shapes and config fields", async () => {
  const model = await loadModel(BASE);
  attachLoRA(model, { r: 4, alpha: 8, dropout: 0.05, targetModules: ["q_proj", "v_proj"] });
  const dir = await Deno.makeTempDir();
  await saveAdapter(model, dir, { baseModelNameOrPath: "stas/tiny-random-llama-2" });
  const exp = EXPECTED.cases["tiny-llama-lora-qv"];
  const file = await openSafetensors(`${dir}/adapter_model.safetensors`);
  assertEquals([...file.names()].sort(), exp.sorted_keys);
  for (const k of exp.sorted_keys) {
    const info = file.info(k);
    assertEquals({ dtype: info.dtype, shape: [...info.shape] }, exp.tensors[k]);
  }
  assertEquals(file.metadata, EXPECTED.metadata);
  file.close();
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  assertEquals(Object.keys(cfg).sort(), [...EXPECTED.peft_0_19_1_config_keys].sort());
  for (const [k, v] of Object.entries(exp.required_config)) assertEquals(cfg[k], v, `config field ${k}`);
  assertEquals([...cfg.target_modules].sort(), [...exp.target_modules_set].sort());
  await Deno.remove(dir, { recursive: true });
  model.dispose();
});

Deno.test("save → load round trip reproduces the adapted model", async () => {
  const model = await loadModel(BASE);
  attachLoRA(model, { r: 2, alpha: 4, targetModules: "all-linear", seed: 5 });
  // give B non-zero values so the adapter matters
  for (const p of model.trainableParams()) {
    tf.tidy(() => p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.1, "float32", 9)));
  }
  const want = model.forward([[1, 42, 99]]).dataSync();
  const dir = await Deno.makeTempDir();
  await saveAdapter(model, dir);
  const fresh = await loadModel(BASE);
  await loadAdapter(fresh, dir);
  assert(relError(fresh.forward([[1, 42, 99]]).dataSync(), want) < 1e-6);
  await Deno.remove(dir, { recursive: true });
  model.dispose();
  fresh.dispose();
});

Deno.test("exportRank() writes a DyLoRA adapter truncated to rank b as a plain LoRA that reproduces rank b", async () => {
  const model = await loadModel(BASE);
  attachDyLoRA(model, { r: 4, alpha: 8, targetModules: ["q_proj", "o_proj"], seed: 2 });
  for (const p of model.trainableParams()) {
    tf.tidy(() => p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.1, "float32", 4)));
  }
  setRank(model, 2);
  const want = model.forward([[1, 5, 6]]).dataSync();
  const dir = await Deno.makeTempDir();
  await exportRank(model, 2, dir);
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  assertEquals([cfg.r, cfg.lora_alpha, cfg.peft_type], [2, 8, "LORA"]);
  const fresh = await loadModel(BASE);
  await loadAdapter(fresh, dir);
  assert(relError(fresh.forward([[1, 5, 6]]).dataSync(), want) < 1e-6);
  await Deno.remove(dir, { recursive: true });
  model.dispose();
  fresh.dispose();
});

Deno.test("a failed load (wrong shape, unknown module, wrong type) leaves the base model unchanged", async () => {
  const model = await loadModel(BASE);
  const before = weightsOf(model);
  const dir = await Deno.makeTempDir();
  const cfg = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj"] };
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify(cfg));
  // wrong shape: in-features 32 instead of 16 (an adapter for another model)
  await writeSafetensors(`${dir}/adapter_model.safetensors`, [
    {
      name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
      dtype: "F32",
      shape: [4, 32],
      data: new Float32Array(128),
    },
    {
      name: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
      dtype: "F32",
      shape: [16, 4],
      data: new Float32Array(64),
    },
  ]);
  await assertRejects(() => loadAdapter(model, dir), TypeError, "shape");
  // unknown module (another architecture)
  await writeSafetensors(`${dir}/adapter_model.safetensors`, [
    {
      name: "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
      dtype: "F32",
      shape: [4, 16],
      data: new Float32Array(64),
    },
    {
      name: "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
      dtype: "F32",
      shape: [16, 4],
      data: new Float32Array(64),
    },
  ]);
  await assertRejects(() => loadAdapter(model, dir), RangeError, "does not exist");
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify({ ...cfg, peft_type: "IA3" }));
  await assertRejects(() => loadAdapter(model, dir), RangeError, "IA3");
  assertEquals(
    model.trainableParams().length,
    model.linears().length + 2 * model.layers.length + 2,
    "base still trainable, no adapter",
  );
  assertEquals(weightsOf(model), before);
  await Deno.remove(dir, { recursive: true });
  model.dispose();
});

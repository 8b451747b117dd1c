/** Issue 12, cases that used to load silently: each now ends in an error naming the file and what is wrong. */
import { assertRejects, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { parseLlamaConfig } from "../../lib/models/llama_config.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";

await initEngine({ backend: "cpu" });
const CONFIG = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 3,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};

for (
  const [key, value] of [["rms_norm_eps", -1], ["rms_norm_eps", 0], ["rope_theta", 0], [
    "rope_theta",
    -5,
  ]] as const
) {
  Deno.test(`config ${key}: ${value} is refused (every logit would be NaN)`, () => {
    assertThrows(
      () => parseLlamaConfig({ ...CONFIG, [key]: value }, "x/config.json"),
      RangeError,
      `x/config.json: "${key}"`,
    );
  });
}

Deno.test("a config with fewer layers than the checkpoint is refused, naming the extra layers", async () => {
  const dir = await Deno.makeTempDir();
  const m = initModel(CONFIG, { seed: 1 });
  await saveCheckpoint(m, dir);
  m.dispose();
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, num_hidden_layers: 2 }));
  await assertRejects(
    () => loadModel(dir),
    RangeError,
    "num_hidden_layers 2 but the checkpoint has layer(s) 2",
  );
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  (await loadModel(dir)).dispose(); // the matching config loads
  await Deno.remove(dir, { recursive: true });
});

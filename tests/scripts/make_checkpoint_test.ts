import { CliUsageError } from "../../scripts/_cli.ts";
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import {
  CHECKPOINT_SHAPES,
  makeCheckpoint,
  parseMakeCheckpointArgs,
  tensorList,
} from "../../scripts/make_checkpoint.ts";

await initEngine();

Deno.test("make-checkpoint: a 1-layer SmolLM-135M variant is sharded, indexed and loads (quantized too)", async () => {
  const out = await Deno.makeTempDir();
  try {
    const r = await makeCheckpoint({ name: "smollm-135m", out, layers: 1, seed: 3 });
    assert(r.shards >= 2, `expected 2+ shards, got ${r.shards}`);
    const index = JSON.parse(await Deno.readTextFile(`${out}/model.safetensors.index.json`));
    const names = tensorList({ ...CHECKPOINT_SHAPES["smollm-135m"], layers: 1 }).map((t) => t.name).sort();
    assertEquals(Object.keys(index.weight_map).sort(), names);
    assertEquals(index.metadata.total_size, r.bytes);
    const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assertEquals([config.hidden_size, config.num_attention_heads, config.num_key_value_heads], [576, 9, 3]);
    assertEquals([config.intermediate_size, config.vocab_size, config.tie_word_embeddings], [
      1536,
      49152,
      true,
    ]);
    for (const quantize of [false, "nf4"] as const) {
      const before = tf.memory().numTensors;
      const model = await loadModel(out, { quantize });
      assertEquals(model.layers.length, 1);
      assertEquals(model.lmHead, null); // tied
      const logits = model.forward([[1, 2, 3]]);
      assertEquals(logits.shape, [1, 3, 49152]);
      const v = logits.dataSync();
      assert(v.every(Number.isFinite), "finite logits");
      logits.dispose();
      model.dispose();
      assertEquals(tf.memory().numTensors, before);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("make-checkpoint: command line errors name the problem", () => {
  assertThrows(() => parseMakeCheckpointArgs(["gpt-5"]), CliUsageError, "unknown model");
  assertThrows(() => parseMakeCheckpointArgs(["smollm-135m", "--layers", "0"]), CliUsageError, "--layers");
  assertThrows(() => parseMakeCheckpointArgs(["smollm-135m", "--bogus"]), CliUsageError, "unknown option");
  assertEquals(parseMakeCheckpointArgs(["llama-2-7b", "--out", "x"]).out, "x");
});

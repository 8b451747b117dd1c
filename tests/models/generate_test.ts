import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { loadTokenizer } from "../../lib/io/tokenizer.ts";
import { generate, pickToken } from "../../lib/models/generate.ts";
import { EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";

await initEngine();

Deno.test("greedy generate() with the KV cache equals argmax decoding by full forwards", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const prompt = "ROMEO:\nBut soft";
  const before = tf.memory().numTensors;
  const text = generate(model, tok, prompt, { maxNewTokens: 12 });
  assertEquals(tf.memory().numTensors, before, "generate leaked tensors");
  const ids = [tok.bosId!, ...tok.encode(prompt, { addSpecialTokens: false })];
  const out: number[] = [];
  for (let i = 0; i < 12; i++) {
    const last = tf.tidy(() => {
      const l = model.forward([ids]);
      return tf.slice(l, [0, ids.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array;
    });
    const id = pickToken(last, 0, 0, Math.random);
    if (tok.eosIds.includes(id)) break;
    out.push(id);
    ids.push(id);
  }
  assertEquals(text, tok.decode(out, { skipSpecialTokens: true }));
  model.dispose();
});

Deno.test("generate() stops at a stop string and cuts it off; sampling is reproducible by seed", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  const text = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 60, stop: ["\n"] });
  assert(!text.includes("\n"), JSON.stringify(text));
  const a = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 20, temperature: 1, topK: 20, seed: 3 });
  const b = generate(model, tok, "KING HENRY:\n", { maxNewTokens: 20, temperature: 1, topK: 20, seed: 3 });
  assertEquals(a, b);
  assertThrows(
    () => generate(model, tok, "x", { maxTokens: 3 } as never),
    TypeError,
    'generate: option "maxTokens" was renamed to "maxNewTokens"',
  );
  assertThrows(
    () => generate(model, tok, "x", { maxNewTokns: 3 } as never),
    TypeError,
    'unknown option "maxNewTokns"',
  );
  assertThrows(
    () => generate(model, tok, "x", { temperature: -1 }),
    RangeError,
    'option "temperature" must be',
  );
  model.dispose();
});

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { createCache, disposeCache } from "../../lib/models/llama.ts";

await initEngine();
const FIXTURE = new URL("../fixtures/external/tiny-random-llama-2", import.meta.url).pathname;

interface ModelCase {
  input_ids: number[];
  greedy_token: number;
  greedy_continuation: number[];
  sampled_logits: Record<string, number>;
}

Deno.test("forward() matches Transformers logits of the real tiny-random-llama-2 checkpoint", async () => {
  const ref = JSON.parse(await Deno.readTextFile(`${FIXTURE}/reference_logits.json`));
  const model = await loadModel(FIXTURE);
  const before = tf.memory().numTensors;
  for (const c of ref.model_cases as ModelCase[]) {
    const logits = model.forward([c.input_ids]);
    const last = tf.tidy(() => tf.slice(logits, [0, c.input_ids.length - 1, 0], [1, 1, -1]).dataSync());
    logits.dispose();
    for (const [id, want] of Object.entries(c.sampled_logits)) {
      assertAlmostEquals(last[Number(id)], want, 1e-5, `logit ${id} for ${c.input_ids}`);
    }
    let best = 0;
    for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
    assertEquals(best, c.greedy_token);
  }
  assertEquals(tf.memory().numTensors, before, "forward leaked tensors");
  model.dispose();
});

Deno.test("incremental decoding with a KV cache equals a full forward", async () => {
  const model = await loadModel(FIXTURE);
  const ids = [1, 42, 99, 7, 5];
  const full = model.forward([ids]).arraySync()[0];
  const cache = createCache(model);
  const first = model.forward([ids.slice(0, 3)], { cache });
  first.dispose();
  for (let t = 3; t < ids.length; t++) {
    const step = model.forward([[ids[t]]], { cache });
    const got = step.arraySync()[0][0];
    step.dispose();
    for (let v = 0; v < got.length; v += 97) assertAlmostEquals(got[v], full[t][v], 1e-5);
  }
  assertEquals(cache.length, 5);
  disposeCache(cache);
  model.dispose();
});

Deno.test("right padding does not change the logits of real tokens", async () => {
  const model = await loadModel(FIXTURE);
  const a = model.forward([[1, 42, 99]]).arraySync()[0];
  const b = model.forward([[1, 42, 99, 0, 0]], { attentionMask: [[1, 1, 1, 0, 0]] }).arraySync()[0];
  for (let t = 0; t < 3; t++) for (let v = 0; v < 3000; v += 101) assertAlmostEquals(a[t][v], b[t][v], 1e-5);
  model.dispose();
});

Deno.test("forward() rejects ids outside the vocabulary and ragged batches", async () => {
  const model = await loadModel(FIXTURE);
  assertThrows(() => model.forward([[1, 3000]]), RangeError, "outside the vocabulary");
  assertThrows(() => model.forward([[1, 2], [1]]), TypeError, "same length");
  model.dispose();
});

Deno.test("summary() counts every parameter of the checkpoint", async () => {
  const model = await loadModel(FIXTURE);
  const total = model.summary().reduce((s, r) => s + r.params, 0);
  // 2·3000·16 (embed + head) + 16 (norm) + 2·(2·16 + 4·16·16 + 3·64·16)
  assertEquals(total, 2 * 3000 * 16 + 16 + 2 * (2 * 16 + 4 * 256 + 3 * 1024));
  assert(model.summary().every((r) => r.dtype === "fp32"));
  model.dispose();
});

Deno.test("loading and disposing a model (dense or 4-bit) leaves no tensors behind", async () => {
  const before = tf.memory().numTensors;
  for (const options of [{}, { quantize: "nf4" as const }]) {
    const model = await loadModel(FIXTURE, options);
    model.dispose();
    assertEquals(tf.memory().numTensors, before, JSON.stringify(options));
  }
});

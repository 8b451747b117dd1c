import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { accumulateGradients, clipByGlobalNorm } from "../../lib/train/accumulate.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import type { Example } from "../../lib/train/data.ts";

await initEngine();

const CONFIG = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};

// Unequal target counts per micro-batch: 2+9 targets vs 3+1 (prompt tokens masked with -100).
const EXAMPLES: Example[] = [
  { ids: [1, 5, 6, 7], labels: [-100, -100, 6, 7] },
  { ids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], labels: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] },
  { ids: [1, 9, 8, 7], labels: [1, 9, 8, 7] },
  { ids: [1, 4, 4], labels: [-100, -100, 4] },
];

function flat(grads: tf.Tensor[]): Float32Array {
  return tf.tidy(() => tf.concat(grads.map((g) => tf.reshape(g, [-1]))).dataSync() as Float32Array);
}

Deno.test("k micro-batches normalised by total target tokens give the one-big-batch gradient", () => {
  const model = initModel(CONFIG, { seed: 3 });
  const params = model.trainableParams();
  const before = tf.memory().numTensors;
  const big = accumulateGradients(model, params, [makeMicroBatch(EXAMPLES, 0)]);
  const small = accumulateGradients(model, params, [
    makeMicroBatch(EXAMPLES.slice(0, 2), 0),
    makeMicroBatch(EXAMPLES.slice(2), 0),
  ]);
  assertEquals(small.tokens, big.tokens);
  assertEquals(big.tokens, 2 + 9 + 3 + 1);
  const err = relError(flat(small.grads), flat(big.grads));
  assert(err < 1e-5, `relative error ${err}`);
  assert(Math.abs(small.loss - big.loss) / big.loss < 1e-5, `loss ${small.loss} vs ${big.loss}`);
  // Four micro-batches of one example each: still exact.
  const single = accumulateGradients(model, params, EXAMPLES.map((e) => makeMicroBatch([e], 0)));
  assert(relError(flat(single.grads), flat(big.grads)) < 1e-5);
  for (const r of [big, small, single]) r.grads.forEach((g) => g.dispose());
  assertEquals(tf.memory().numTensors, before, "accumulation leaked tensors");
  model.dispose();
});

Deno.test("averaging per-micro-batch mean losses (the old trainer bug) does not give the big-batch gradient", () => {
  const model = initModel(CONFIG, { seed: 3 });
  const params = model.trainableParams();
  const big = accumulateGradients(model, params, [makeMicroBatch(EXAMPLES, 0)]);
  const naive = accumulateGradients(
    model,
    params,
    [makeMicroBatch(EXAMPLES.slice(0, 2), 0), makeMicroBatch(EXAMPLES.slice(2), 0)],
    { normalisation: "per-micro-batch-mean" },
  );
  const err = relError(flat(naive.grads), flat(big.grads));
  assert(err > 1e-2, `naive accumulation unexpectedly matched (relative error ${err})`);
  [...big.grads, ...naive.grads].forEach((g) => g.dispose());
  model.dispose();
});

Deno.test("clipByGlobalNorm() rescales to the requested norm and reports the original", () => {
  const g = [tf.tensor1d([3, 0]), tf.tensor1d([0, 4])];
  const { grads, norm } = clipByGlobalNorm(g, 1);
  assert(Math.abs(norm - 5) < 1e-6);
  const after = Math.sqrt(grads.reduce((s, t) => s + tf.tidy(() => tf.sum(tf.square(t)).dataSync()[0]), 0));
  assert(Math.abs(after - 1) < 1e-5, `norm after clipping ${after}`);
  grads.forEach((t) => t.dispose());
});

Deno.test("a batch without target tokens is rejected with the step named", () => {
  const model = initModel(CONFIG, { seed: 1 });
  assertThrows(
    () =>
      accumulateGradients(model, model.trainableParams(), [
        makeMicroBatch([{ ids: [1, 2], labels: [-100, -100] }], 0),
      ], { label: "step 7" }),
    RangeError,
    "step 7",
  );
  model.dispose();
});

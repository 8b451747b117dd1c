import * as tf from "@tensorflow/tfjs-core";
import { ensureGradients } from "../../lib/engine/gradients.ts";
import { registerMissingKernels } from "../../lib/engine/missing_kernels.ts";
import { assert, assertEquals, maxAbsDiff, on, randomValues } from "./_helpers.ts";

const SHAPES: { x: number[]; ids: number[]; segments: number }[] = [
  { x: [1], ids: [1], segments: 1 },
  { x: [17, 3], ids: [17], segments: 5 },
  { x: [3, 64], ids: [3], segments: 2 },
  { x: [6, 2, 4], ids: [6], segments: 4 }, // inner [2, 4]
  { x: [64], ids: [64], segments: 17 },
];

Deno.test("wasm UnsortedSegmentSum matches the cpu backend, dropping out-of-range ids", async () => {
  await on("wasm", registerMissingKernels);
  let seed = 1;
  for (const s of SHAPES) {
    const n = s.ids.reduce((p, q) => p * q, 1);
    // ids in [-1, segments]: includes one out-of-range value on each side.
    const ids = Array.from(randomValues(n, seed++), (v) => Math.floor((v + 1) / 2 * (s.segments + 2)) - 1);
    const x = randomValues(s.x.reduce((p, q) => p * q, 1), seed++);
    const f = () =>
      tf.tidy(() => {
        const idT: tf.Tensor = tf.tensor(ids, s.ids, "int32");
        const y = tf.unsortedSegmentSum(tf.tensor(x, s.x), idT as tf.Tensor1D, s.segments);
        return { shape: y.shape, data: y.dataSync() };
      });
    const want = await on("cpu", f);
    const before = await on("wasm", () => tf.memory().numTensors);
    const got = f();
    assertEquals(tf.memory().numTensors, before);
    assertEquals(got.shape, want.shape);
    assert(maxAbsDiff(got.data, want.data) < 1e-5, `${JSON.stringify(s)}`);
  }
});

Deno.test("the gather (embedding) gradient runs on wasm and matches the recipe", async () => {
  assert(await ensureGradients(), "tfjs op gradients must be registered");
  await on("wasm", registerMissingKernels);
  const before = tf.memory().numTensors;
  const g = tf.tidy(() => {
    const table = tf.ones([5, 3]);
    const ids = tf.tensor1d([1, 3, 1], "int32");
    return tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, ids)))(table).arraySync();
  });
  assertEquals(g, [[0, 0, 0], [2, 2, 2], [0, 0, 0], [1, 1, 1], [0, 0, 0]]);
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("registerMissingKernels() can be called twice", async () => {
  await on("wasm", registerMissingKernels);
  registerMissingKernels();
  assert(tf.getKernel("UnsortedSegmentSum", "wasm") !== undefined);
});

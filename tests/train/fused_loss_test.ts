import * as tf from "@tensorflow/tfjs-core";
import { assert, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { nllSum } from "../../lib/train/loss.ts";
import { mulberry32 } from "../../lib/train/random.ts";

await initEngine({ backend: "wasm" });

/** The op-by-op reference: Σ w·(logsumexp(z) − z[y]). */
function reference(z: tf.Tensor2D, y: tf.Tensor1D, w: tf.Tensor1D): tf.Scalar {
  const lse = tf.logSumExp(z, 1);
  const picked = tf.sum(tf.mul(z, tf.oneHot(y, z.shape[1])), 1);
  return tf.sum(tf.mul(tf.sub(lse, picked), w));
}

Deno.test("fused cross-entropy (nllSum) matches the op-by-op formula in value and gradient, leaking nothing", () => {
  const rand = mulberry32(3);
  const N = 13, V = 517;
  const z = tf.tensor2d(Float32Array.from({ length: N * V }, () => (rand() - 0.5) * 16), [N, V]);
  const y = tf.tensor1d(Int32Array.from({ length: N }, () => Math.floor(rand() * V)), "int32");
  const w = tf.tensor1d(Float32Array.from({ length: N }, (_, i) => (i % 4 === 0 ? 0 : 1)));
  const before = tf.memory().numTensors;
  const scale = 0.37; // an upstream gradient other than 1
  const fused = tf.valueAndGrad((x: tf.Tensor) => tf.mul(nllSum(x as tf.Tensor2D, y, w), scale) as tf.Scalar)(
    z,
  );
  const ref = tf.valueAndGrad((x: tf.Tensor) =>
    tf.mul(reference(x as tf.Tensor2D, y, w), scale) as tf.Scalar
  )(z);
  const [fv, rv] = [fused.value.dataSync()[0], ref.value.dataSync()[0]];
  assert(Math.abs(fv - rv) <= 1e-5 * Math.abs(rv), `loss ${fv} vs ${rv}`);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(fused.grad, ref.grad))).dataSync()[0]);
  assert(diff < 1e-6, `gradient differs by ${diff}`);
  tf.dispose([fused.value, fused.grad, ref.value, ref.grad]);
  assert(tf.memory().numTensors === before, `leaked ${tf.memory().numTensors - before} tensors`);
  tf.dispose([z, y, w]);
});

Deno.test("fused cross-entropy: a counted target outside the vocabulary is a RangeError naming the row", () => {
  const z = tf.zeros([2, 4]) as tf.Tensor2D;
  const y = tf.tensor1d([1, 9], "int32"), w = tf.tensor1d([1, 1]);
  assertThrows(() => nllSum(z, y, w), RangeError, "row 1");
  tf.dispose([z, y, w]);
});

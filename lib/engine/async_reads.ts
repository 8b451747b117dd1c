/**
 * Reading values back from the device without synchronous reads.
 *
 * tfjs-webgpu cannot read a GPU tensor synchronously under Deno (its `dataSync`
 * needs a canvas), so the training, evaluation and generation paths read with
 * `await tensor.data()`, batched so that a step waits once. On wasm and cpu these
 * helpers resolve at once with the same values `dataSync()` gives.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/**
 * True when the active backend can read tensors synchronously (`dataSync`):
 * every backend but webgpu.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { canReadSync } from "./async_reads.ts";
 * await tf.setBackend("cpu");
 * if (!canReadSync()) throw new Error("cpu reads synchronously");
 * ```
 */
export function canReadSync(): boolean {
  return tf.getBackend() !== "webgpu";
}

/**
 * Reads several scalars (or one-element tensors) with a single device wait: they
 * are stacked on the device and read with one `await data()`. The inputs are left
 * to the caller; nothing else stays allocated.
 *
 * @param scalars one-element tensors of any dtype
 * @returns their values, in order (booleans as 0/1)
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { readScalars } from "./async_reads.ts";
 * await tf.setBackend("cpu");
 * const a = tf.scalar(1.5), b = tf.sum(tf.tensor1d([1, 2]));
 * const [x, y] = await readScalars([a, b]);
 * if (x !== 1.5 || y !== 3) throw new Error(`got ${x}, ${y}`);
 * tf.dispose([a, b]);
 * ```
 */
export async function readScalars(scalars: tf.Tensor[]): Promise<number[]> {
  if (scalars.length === 0) return [];
  for (const [i, s] of scalars.entries()) {
    if (s.size !== 1) throw new RangeError(`readScalars: input ${i} has shape [${s.shape}], not one element`);
  }
  const packed = tf.tidy(() => tf.concat(scalars.map((s) => tf.reshape(tf.cast(s, "float32"), [1]))));
  try {
    return Array.from(await packed.data());
  } finally {
    packed.dispose();
  }
}

/**
 * Brings the values of `tensors` to the host with one wait, so that later
 * `dataSync()` calls on exactly these tensors return the cached copy instead of
 * failing on webgpu. This is the host fallback of the optimizers that keep their
 * states in host memory (8-bit AdamW): their gradients are read here, once per step.
 * A no-op on backends that read synchronously.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { prefetchToHost } from "./async_reads.ts";
 * await tf.setBackend("cpu");
 * const g = tf.ones([2, 2]);
 * await prefetchToHost([g]);
 * if (g.dataSync()[0] !== 1) throw new Error("value");
 * g.dispose();
 * ```
 */
export async function prefetchToHost(tensors: tf.Tensor[]): Promise<void> {
  if (canReadSync()) return;
  await Promise.all(tensors.map((t) => t.data()));
}

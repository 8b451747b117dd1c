/**
 * Token-level cross-entropy for causal LM training.
 *
 * Dimension legend: B batch, T sequence, V vocab, N = B·T.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { forwardOptionsOf, type MicroBatch } from "./batching.ts";
import { nativeKernels } from "../engine/native.ts";
import { filledTensor, heapValues } from "../engine/heap_tensor.ts";

/**
 * {@linkcode nllSum} as one fused kernel (native when built): row-wise logsumexp and the target
 * logit in one pass over `[N, V]`, and a backward writing `dy·w·(softmax − onehot)` straight into
 * the gradient, with no one-hot and no other `[N, V]` intermediates.
 */
function fusedNllSum(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  const [N, V] = logits.shape;
  const y = targets.dataSync() as Int32Array;
  const w = weights.dataSync() as Float32Array;
  for (let i = 0; i < N; i++) {
    if (!(y[i] >= 0 && y[i] < V) && w[i] !== 0) {
      throw new RangeError(`nllSum: target ${y[i]} at row ${i} is outside the vocabulary [0, ${V})`);
    }
  }
  const yc = y.map((t) => (t >= 0 && t < V ? t : 0)); // ignored rows (weight 0) may hold any id
  const k = nativeKernels();
  const f = tf.customGrad((z, save) => {
    (save as tf.GradSaveFunc)([z as tf.Tensor]);
    const rowLoss = new Float32Array(N);
    k.crossEntropy(heapValues(z as tf.Tensor), yc, w, V, 1, rowLoss, null);
    let sum = 0;
    for (const l of rowLoss) sum += l;
    return {
      value: tf.scalar(sum),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const g = dy.dataSync()[0];
        return filledTensor(
          [N, V],
          (grad, [zv]) => k.crossEntropy(zv, yc, w, V, g, new Float32Array(N), grad),
          [
            saved[0],
          ],
        );
      },
    };
  });
  return f(logits) as tf.Scalar;
}

/**
 * Sum of weighted negative log-likelihoods `Σ wₙ·(logsumexp(zₙ) − zₙ[yₙ])` (a scalar).
 *
 * @param logits `[N, V]`
 * @param targets int32 `[N]`
 * @param weights `[N]` (0 excludes a position)
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { nllSum } from "./loss.ts";
 * await tf.setBackend("cpu");
 * // uniform logits over 4 classes: loss per token is ln 4
 * const l = nllSum(tf.zeros([2, 4]), tf.tensor1d([1, 2], "int32"), tf.tensor1d([1, 1]));
 * if (Math.abs(l.dataSync()[0] - 2 * Math.log(4)) > 1e-5) throw new Error("bad loss");
 * ```
 */
export function nllSum(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  // webgpu cannot read synchronously: the op-by-op formula below.
  if (tf.getBackend() !== "webgpu" && logits.dtype === "float32") {
    return fusedNllSum(logits, targets, weights);
  }
  return tf.tidy(() => {
    const V = logits.shape[1];
    const lse = tf.logSumExp(logits, 1); // [N]
    const picked = tf.sum(tf.mul(logits, tf.oneHot(targets, V)), 1); // [N]
    return tf.sum(tf.mul(tf.sub(lse, picked), weights)) as tf.Scalar;
  });
}

/** Summed next-token loss of a micro-batch under `model` (a scalar, differentiable). */
export function microBatchLossSum(model: LlamaForCausalLM, batch: MicroBatch): tf.Scalar {
  return tf.tidy(() => {
    const logits = model.forward(batch.ids, forwardOptionsOf(batch)); // [B, T, V]
    const [B, T, V] = logits.shape;
    return nllSum(
      tf.reshape(logits, [B * T, V]),
      tf.tensor1d(batch.targets, "int32"),
      tf.tensor1d(batch.weights, "float32"),
    );
  });
}

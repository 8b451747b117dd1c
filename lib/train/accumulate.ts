/**
 * Gradient accumulation that is exactly a large batch.
 *
 * Every micro-batch's summed token loss is divided by the number of target
 * tokens across ALL accumulated micro-batches, so the summed gradients equal the
 * gradient of the mean token loss of the concatenated batch. Averaging each
 * micro-batch's own mean (the bug a widely used trainer shipped until 2024) is
 * wrong whenever micro-batches hold different numbers of target tokens.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { NamedParam } from "../models/linear.ts";
import type { MicroBatch } from "./batching.ts";
import { microBatchLossSum } from "./loss.ts";

/** Result of {@linkcode accumulateGradients}; dispose `grads` when done. */
export interface AccumulatedGradients {
  /** Gradient per parameter, same order as the `params` passed in. */
  grads: tf.Tensor[];
  /** Mean loss per target token over all micro-batches. */
  loss: number;
  /** Target tokens over all micro-batches. */
  tokens: number;
}

/** How the per-micro-batch losses are normalised. */
export type Normalisation = "total-tokens" | "per-micro-batch-mean";

/**
 * Sums the gradients of `params` over `microBatches`.
 *
 * @param normalisation "total-tokens" (exact, default) or "per-micro-batch-mean"
 *   (the naive average of micro-batch means — kept only to demonstrate the bug).
 * @param label used in error messages, e.g. "step 12".
 */
export function accumulateGradients(
  model: LlamaForCausalLM,
  params: NamedParam[],
  microBatches: MicroBatch[],
  options: {
    normalisation?: Normalisation;
    label?: string;
    /** Sees each micro-batch's (scaled) loss and gradients before they are summed; may throw to stop. */
    onMicroBatch?: (loss: number, grads: tf.Tensor[], index: number) => void;
  } = {},
): AccumulatedGradients {
  const label = options.label ?? "step";
  const norm = options.normalisation ?? "total-tokens";
  const total = microBatches.reduce((s, b) => s + b.numTargets, 0);
  if (total === 0) throw new RangeError(`${label}: the batch has no target tokens (all labels are -100?)`);
  if (params.length === 0) throw new RangeError(`${label}: no trainable parameters`);
  const vars = params.map((p) => p.variable);
  let grads: tf.Tensor[] | undefined;
  let lossSum = 0;
  microBatches.forEach((mb, i) => {
    if (mb.numTargets === 0) return;
    const divisor = norm === "total-tokens" ? total : mb.numTargets * microBatches.length;
    const { value, grads: g } = tf.variableGrads(
      () => tf.div(microBatchLossSum(model, mb), divisor) as tf.Scalar,
      vars,
    );
    const v = value.dataSync()[0];
    value.dispose();
    if (options.onMicroBatch) {
      try {
        options.onMicroBatch(v, vars.map((x) => g[x.name]), i);
      } catch (e) {
        for (const t of Object.values(g)) t.dispose();
        grads?.forEach((t) => t.dispose());
        throw e;
      }
    }
    if (!Number.isFinite(v)) {
      for (const t of Object.values(g)) t.dispose();
      grads?.forEach((t) => t.dispose());
      throw new RangeError(
        `${label}: loss is ${v} on micro-batch ${i + 1}/${microBatches.length}; no weights were changed. ` +
          "Lower the learning rate or check the data.",
      );
    }
    lossSum += norm === "total-tokens" ? v * total : v * mb.numTargets * microBatches.length;
    const list = vars.map((x) => g[x.name]);
    if (!grads) grads = list;
    else {
      grads = grads.map((acc, j) => {
        const s = tf.add(acc, list[j]);
        acc.dispose();
        list[j].dispose();
        return s;
      });
    }
  });
  return { grads: grads!, loss: lossSum / total, tokens: total };
}

/**
 * Scales gradients in place so their global L2 norm is at most `maxNorm`; returns
 * the norm before clipping. `maxNorm <= 0` or `Infinity` disables clipping.
 */
export function clipByGlobalNorm(grads: tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: number } {
  const norm = Math.sqrt(tf.tidy(() => tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0]));
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm) || norm <= maxNorm) return { grads, norm };
  const scale = maxNorm / (norm + 1e-6);
  return {
    grads: grads.map((g) => {
      const s = tf.mul(g, scale);
      g.dispose();
      return s;
    }),
    norm,
  };
}

/**
 * Held-out loss and perplexity.
 * @module
 */
import { requireSyncReads } from "../engine/backend.ts";
import * as tf from "@tensorflow/tfjs-core";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { chunk, makeMicroBatch } from "./batching.ts";
import type { Example } from "./data.ts";
import { microBatchLossSum } from "./loss.ts";

/** Result of {@linkcode evaluateLoss}. */
export interface EvalResult {
  /** Mean loss per target token. */
  loss: number;
  /** `exp(loss)`. */
  perplexity: number;
  /** Target tokens scored. */
  tokens: number;
}

/**
 * Mean next-token loss of `model` over `examples` (no gradients are kept).
 *
 * @param padId id used for padding (masked out; any valid id works).
 */
export function evaluateLoss(
  model: LlamaForCausalLM,
  examples: Example[],
  options: { batchSize?: number; padId?: number } = {},
): EvalResult {
  let sum = 0, tokens = 0;
  requireSyncReads("evaluateLoss()");
  for (const group of chunk(examples, options.batchSize ?? 8)) {
    const mb = makeMicroBatch(group, options.padId ?? 0);
    if (mb.numTargets === 0) continue;
    sum += tf.tidy(() => microBatchLossSum(model, mb).dataSync()[0]);
    tokens += mb.numTargets;
  }
  if (tokens === 0) throw new RangeError("evaluation data has no target tokens");
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}

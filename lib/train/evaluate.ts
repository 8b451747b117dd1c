/**
 * Held-out loss and perplexity.
 * @module
 */
import { requireSyncReads } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { chunk, makeMicroBatch } from "./batching.ts";
import type { Example } from "./data.ts";
import { microBatchLossSum } from "./loss.ts";
import { custom, defineOptions, type FieldsOf, integer } from "../options/schema.ts";

/** What the evaluation helpers tick: the notebook's `progress(total)` bar, or anything with `tick(n)`. */
export interface ProgressSink {
  /** Adds `n` finished items. */
  tick(n?: number): void;
}

/** An option holding a progress bar (anything with `tick(n)`, as `progress()` returns). */
export function progressField(doc: string) {
  return custom<ProgressSink>(
    doc,
    "a progress bar (progress(total))",
    (v) => typeof (v as ProgressSink | null)?.tick === "function",
    { example: { tick() {} } },
  );
}
import { readScalars } from "../engine/async_reads.ts";

/** Options of {@linkcode evaluateLoss}. */
export interface EvaluateOptions {
  /** Examples per eval batch. @default {8} */
  batchSize?: number;
  /** Token id used to pad a batch (its positions carry no loss). @default {0} */
  padId?: number;
  /** A progress bar (`progress(examples.length)`) ticked by the examples of each batch as it is scored. */
  progress?: ProgressSink;
}

/** The schema of {@linkcode evaluateLoss}'s options. */
export const evaluateSchema = defineOptions(
  "evaluateLoss",
  {
    batchSize: integer("Examples per eval batch.", { min: 1, default: 8 }),
    padId: integer("Token id used to pad a batch.", { min: 0, default: 0 }),
    progress: progressField("A progress bar ticked by the examples of each batch as it is scored."),
  } satisfies FieldsOf<EvaluateOptions>,
);

/** What {@linkcode evaluateLoss} returns. */
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
 *
 * @example
 * ```ts
 * import { evaluateLoss } from "./evaluate.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, { std: 0 });
 * // zero weights give uniform predictions: loss = ln(16) per token
 * const r = evaluateLoss(m, [{ ids: [1, 2, 3], labels: [1, 2, 3] }]);
 * if (Math.abs(r.loss - Math.log(16)) > 1e-5 || r.tokens !== 2) throw new Error(JSON.stringify(r));
 * m.dispose();
 * ```
 */
export function evaluateLoss(
  model: LlamaForCausalLM,
  examples: Example[],
  options: EvaluateOptions = {},
): EvalResult {
  const o = evaluateSchema.parse(options);
  let sum = 0, tokens = 0;
  requireSyncReads("evaluateLoss() (use `await evaluateLossAsync()`)");
  for (const group of chunk(examples, o.batchSize)) {
    const mb = makeMicroBatch(group, o.padId);
    if (mb.numTargets === 0) continue;
    sum += tf.tidy(() => microBatchLossSum(model, mb).dataSync()[0]);
    tokens += mb.numTargets;
    o.progress?.tick(group.length);
  }
  if (tokens === 0) throw new RangeError("evaluation data has no target tokens");
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}

/**
 * {@linkcode evaluateLoss} without synchronous reads (works on every backend, webgpu
 * included): each micro-batch's summed loss stays on the device and all of them are read
 * with one wait at the end. Same result as `evaluateLoss` (the sums are added on the host
 * in the same order).
 *
 * @example
 * ```ts
 * import { evaluateLossAsync } from "./evaluate.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, { std: 0 });
 * const r = await evaluateLossAsync(m, [{ ids: [1, 2, 3], labels: [1, 2, 3] }]);
 * if (Math.abs(r.loss - Math.log(16)) > 1e-5 || r.tokens !== 2) throw new Error(JSON.stringify(r));
 * m.dispose();
 * ```
 */
export async function evaluateLossAsync(
  model: LlamaForCausalLM,
  examples: Example[],
  options: EvaluateOptions = {},
): Promise<EvalResult> {
  const o = evaluateSchema.parse(options);
  let tokens = 0;
  const sums: tf.Scalar[] = [];
  try {
    for (const group of chunk(examples, o.batchSize)) {
      const mb = makeMicroBatch(group, o.padId);
      if (mb.numTargets === 0) continue;
      sums.push(tf.tidy(() => microBatchLossSum(model, mb)));
      tokens += mb.numTargets;
      o.progress?.tick(group.length);
    }
    if (tokens === 0) throw new RangeError("evaluation data has no target tokens");
    const loss = (await readScalars(sums)).reduce((a, b) => a + b, 0) / tokens;
    return { loss, perplexity: Math.exp(loss), tokens };
  } finally {
    tf.dispose(sums);
  }
}

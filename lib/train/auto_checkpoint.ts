/**
 * Whether `train()` should turn gradient checkpointing on by itself: when the engine-aware
 * estimate (`lib/plan/engine_estimate.ts`) of one whole-model tape exceeds the wasm heap, the
 * step would die with `HeapOutOfMemoryError`, while block-wise recomputation fits.
 * @module
 */
import { MAX_WASM_HEAP_BYTES } from "../engine/heap_guard.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import { estimateTrainingMemory } from "../plan/engine_estimate.ts";

/** Share of the wasm heap cap a predicted peak may use before checkpointing is turned on. */
export const AUTO_CHECKPOINT_HEAP_SHARE = 0.9;

/** The decision of {@linkcode autoCheckpointing}. */
export interface AutoCheckpointDecision {
  /** Turn gradient checkpointing on. */
  on: boolean;
  /** Predicted peak tensor bytes of the step without recomputation (undefined when it could not be estimated). */
  predictedBytes?: number;
  /** The line to print when `on`. */
  message: string;
}

/** What the estimate needs from the trainer. */
export interface AutoCheckpointInput {
  batchSize: number;
  /** Longest (padded) sequence of a micro-batch. */
  seqLen: number;
  gradAccumSteps: number;
  /** Optimizer name (an instance counts as "adamw"). */
  optimizer?: string;
}

/** The planner's method for a model as it is: adapter kind and a 4-bit base or not. */
export function methodOf(model: LlamaForCausalLM): "full" | "lora" | "qlora" | "dylora" | "qdylora" {
  const quantized = model.linears().some((l) => l.storage().some((s) => /nf4|fp4|int4|gptq/i.test(s.dtype)));
  const kind = model.adapter?.type;
  if (!kind) return "full";
  const dy = kind === "dylora";
  return quantized ? (dy ? "qdylora" : "qlora") : (dy ? "dylora" : "lora");
}

/**
 * Decides from the engine-aware estimate; never throws (an architecture the estimate does not
 * know leaves the choice to the user).
 *
 * @example
 * ```ts
 * import { autoCheckpointing } from "./auto_checkpoint.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const model = initModel({ model_type: "llama", vocab_size: 8, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * const d = autoCheckpointing(model, { batchSize: 1, seqLen: 4, gradAccumSteps: 1 });
 * if (d.on || !(d.predictedBytes! > 0)) throw new Error(JSON.stringify(d));
 * model.dispose();
 * ```
 */
export function autoCheckpointing(
  model: LlamaForCausalLM,
  input: AutoCheckpointInput,
): AutoCheckpointDecision {
  const method = methodOf(model);
  const cfg = model.adapter?.config ?? {};
  let predicted: number;
  try {
    predicted = estimateTrainingMemory(
      model,
      {
        method,
        ...(typeof cfg.r === "number" ? { r: cfg.r } : {}),
        ...(Array.isArray(cfg.targetModules) ? { targetModules: cfg.targetModules as string[] } : {}),
        ...(method === "qlora" || method === "qdylora" ? { quantize: "nf4" } : {}),
        batchSize: input.batchSize,
        seqLen: input.seqLen,
        gradAccumSteps: input.gradAccumSteps,
        gradientCheckpointing: false,
        ...(input.optimizer === "adamw8bit" ? { optimizer: "adamw8bit" } : {}),
      } as Parameters<typeof estimateTrainingMemory>[1],
    ).peakTensorBytes;
  } catch {
    return { on: false, message: "" };
  }
  const limit = AUTO_CHECKPOINT_HEAP_SHARE * MAX_WASM_HEAP_BYTES;
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;
  return {
    on: predicted > limit,
    predictedBytes: predicted,
    message: `[train] gradient checkpointing turned on: the step without recomputation would need about ` +
      `${
        gib(predicted)
      } of tensors at micro-batch ${input.batchSize} x ${input.seqLen}, more than the wasm ` +
      `heap's ${gib(MAX_WASM_HEAP_BYTES)}; pass gradientCheckpointing: false to force it off.`,
  };
}

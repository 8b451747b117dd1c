/**
 * Plans memory for our own engine from the trainer's options, to compare with the
 * `memory` the trainer measures at each step.
 *
 * Our engine computes in fp32 on tfjs (no bf16; 16-bit checkpoints are widened on load).
 * {@linkcode planForModel} asks {@linkcode estimateTrainingMemory} (`engine_estimate.ts`),
 * which replays our forward op by op and counts what the tfjs tape keeps, and returns
 * its prediction of the trainer's `peakTensorBytes` as a {@linkcode MemoryPlan}:
 * - `weights`: fp32 base weights held as tensors (4-bit matrices live in host memory);
 * - `adapters`; `gradients`: parameter gradients alive at the peak;
 * - `optimizerStates`: optimizer state held as tensors (8-bit states live in host memory);
 * - `activations`: clones the tape saves for backward, backward gradients of activations,
 *   and block inputs/batch tensors in block-wise modes;
 * - `workspace`: what the gradient function or update running at the peak holds;
 * - `hostOffloaded`: host memory (4-bit weights and constants, 8-bit optimizer state),
 *   not in `total`.
 * `total` is the predicted peak tensor bytes of a steady-state step. Architectures our
 * engine does not run (GELU MLPs, LayerNorm, biases) get {@linkcode planMemory}'s
 * framework-agnostic plan instead, with a sentence saying so.
 * @module
 */

import { resolveKeys } from "./_resolve.ts";
import type { MemoryPlan } from "./plan_memory.ts";
import { planMemory } from "./plan_memory.ts";
import type { ModelConfigInput, OptimizerStatePrecision, PlanMethod, PlanSpec } from "./plan_spec.ts";
import type { QuantType } from "./quant_bits.ts";
import { resolvePlanSpec } from "./plan_spec.ts";
import { estimateTrainingMemory } from "./engine_estimate.ts";

/** Trainer optimizers (the `optimizer` option of `train()`). */
export type TrainerOptimizer = "adamw" | "adamw8bit" | "galore" | "galore8bit";

/** The trainer and adapter options that change memory. */
export interface TrainerPlanOptions {
  /** Adapter kind attached before training, or "full" for none. @default "full" */
  method?: "full" | "lora" | "qlora" | "dylora" | "qdylora";
  /** LoRA rank (max rank for DyLoRA). @default 8 */
  loraRank?: number;
  /** Adapted modules. @default "all-linear" */
  loraTargets?: string[] | "all-linear";
  /** Sequences per micro-batch. @default 1 */
  batchSize?: number;
  /** Tokens per sequence. @default 512 */
  seqLen?: number;
  /** Micro-batches per step (no change to the peak). @default 1 */
  gradAccumSteps?: number;
  /** Recompute activations in backward. @default false */
  gradientCheckpointing?: boolean;
  /**
   * Step each block as soon as its gradients exist (block-wise recomputation, no
   * accumulation); `galore.layerwise` sets it too, as in `train()`. @default false
   */
  layerwise?: boolean;
  /** Optimizer. @default "adamw" */
  optimizer?: TrainerOptimizer;
  /**
   * GaLore settings; only `rank` and `layerwise` change memory.
   * @default { rank: floor(hidden / 4) (as `train()`), layerwise: false }
   */
  galore?: { rank?: number; layerwise?: boolean; [other: string]: unknown };
  /** 4-bit base for qlora/qdylora (`loadModel`'s `quantize`). @default "nf4" */
  quantize?: QuantType | false;
  /** Double quantization of the 4-bit constants. @default true */
  doubleQuant?: boolean;
  /** 4-bit blocksize. @default 64 */
  blocksize?: number;
  /** Keep paged optimizer state in host memory. @default false */
  paged?: boolean;
}

/** Trainer options that do not change memory; accepted and ignored. */
export const MEMORY_NEUTRAL_TRAINER_KEYS: readonly string[] = [
  "lr",
  "schedule",
  "steps",
  "epochs",
  "onStep",
  "weightDecay",
  "warmupSteps",
  "maxGradNorm",
  "seed",
  "evalData",
  "evalEvery",
  "logEvery",
  "shuffle",
  "beta1",
  "beta2",
  "eps",
];

const DEFAULTS = {
  method: "full" as NonNullable<TrainerPlanOptions["method"]>,
  loraRank: 8,
  loraTargets: "all-linear" as string[] | "all-linear",
  batchSize: 1,
  seqLen: 512,
  gradAccumSteps: 1,
  gradientCheckpointing: false,
  layerwise: false,
  optimizer: "adamw" as TrainerOptimizer,
  galore: {} as NonNullable<TrainerPlanOptions["galore"]>,
  quantize: "nf4" as QuantType | false,
  doubleQuant: true,
  blocksize: 64,
  paged: false,
};

/**
 * Maps a model and trainer options to a {@linkcode PlanSpec} for our fp32 engine.
 *
 * @param config a loaded model (its `.config`), a config object or a preset name
 * @param options trainer options (memory-neutral ones such as `lr` are ignored)
 * @returns the spec
 * @throws {RangeError} when the options contradict each other (GaLore with an adapter)
 * @example
 * ```ts
 * import { planSpecForTrainer } from "./plan_for_model.ts";
 * const s = planSpecForTrainer("1B", { method: "qlora", optimizer: "adamw8bit", batchSize: 2, lr: 1e-4 } as never);
 * if (s.method !== "qlora" || s.optimizerState !== "8bit" || s.computeDtype !== "fp32" || s.microBatch !== 2) {
 *   throw new Error(JSON.stringify(s));
 * }
 * ```
 */
export function planSpecForTrainer(
  config: ModelConfigInput | { config: unknown },
  options?: TrainerPlanOptions,
): PlanSpec {
  const o = resolveKeys("planForModel", options, DEFAULTS, [
    ...Object.keys(DEFAULTS),
    ...MEMORY_NEUTRAL_TRAINER_KEYS,
  ]);
  const galore = o.optimizer === "galore" || o.optimizer === "galore8bit";
  if (galore && o.method !== "full") {
    throw new RangeError(
      `planForModel: optimizer "${o.optimizer}" trains full weights; it cannot be combined with method "${o.method}"`,
    );
  }
  let method: PlanMethod = galore ? o.optimizer as PlanMethod : o.method;
  if ((method === "qlora" || method === "qdylora") && o.quantize === false) {
    method = method === "qlora" ? "lora" : "dylora";
  }
  const eightBit = o.optimizer === "adamw8bit" || o.optimizer === "galore8bit";
  const optimizerState: OptimizerStatePrecision = o.paged
    ? (eightBit ? "paged8bit" : "paged")
    : eightBit
    ? "8bit"
    : "fp32";
  const isModel = typeof config === "object" && config !== null && "config" in config &&
    typeof (config as { config: unknown }).config === "object";
  return {
    ...(isModel ? { model: config as { config: unknown } } : { config: config as ModelConfigInput }),
    method,
    weightDtype: "fp32",
    computeDtype: "fp32",
    adapterDtype: "fp32",
    quant: o.quantize === false ? "nf4" : o.quantize,
    doubleQuant: o.doubleQuant,
    blocksize: o.blocksize,
    loraRank: o.loraRank,
    loraTargets: o.loraTargets,
    optimizerState,
    galoreRank: o.galore.rank ??
      trainerGaloreRank(
        isModel ? { model: config as { config: unknown } } : { config: config as ModelConfigInput },
      ),
    layerwise: o.layerwise || (o.galore.layerwise ?? false),
    microBatch: o.batchSize,
    seqLen: o.seqLen,
    gradientCheckpointing: o.gradientCheckpointing,
    gradAccumSteps: o.gradAccumSteps,
    overheadBytes: 0,
  };
}

/**
 * Plans memory for our fp32 engine from a model and the trainer options: the engine's
 * predicted peak tensor bytes ({@linkcode estimateTrainingMemory}) as a {@linkcode MemoryPlan}
 * (parts as in the module doc), so `planTable`/`planChartSpec` can show it.
 *
 * @param config a loaded model (its `.config`), a config object or a preset name
 * @param options trainer options (memory-neutral ones such as `lr` are ignored)
 * @returns the plan
 * @example
 * ```ts
 * import { planForModel } from "./plan_for_model.ts";
 * const model = { config: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
 *   num_attention_heads: 4, vocab_size: 100 } };
 * const p = planForModel(model, { method: "lora", loraRank: 4, batchSize: 2, seqLen: 16 });
 * // per layer: q, k, v, o take 4·(64 + 64) each; gate, up, down 4·(64 + 128) each
 * if (p.breakdown.weights !== p.params * 4 || p.trainableParams !== 2 * (4 * 4 * 128 + 3 * 4 * 192)) {
 *   throw new Error(String(p.trainableParams));
 * }
 * // the total is the engine's predicted peak tensor bytes, and the parts add up to it
 * const { hostOffloaded: _, ...device } = p.breakdown;
 * if (Object.values(device).reduce((a, b) => a + b, 0) !== p.total) throw new Error("parts");
 * ```
 */
export function planForModel(
  config: ModelConfigInput | { config: unknown },
  options?: TrainerPlanOptions,
): MemoryPlan {
  const base = planMemory(planSpecForTrainer(config, options));
  const sh = base.spec.shape;
  if (!sh || sh.mlp !== "swiglu" || sh.norm !== "rmsnorm" || sh.qkvBias || sh.outBias) {
    return {
      ...base,
      assumptions: [
        ...base.assumptions,
        "Not a Llama-family shape our engine runs: framework-agnostic plan (planMemory), not an engine estimate.",
      ],
    };
  }
  const e = estimateTrainingMemory(config, options);
  const breakdown = {
    weights: e.breakdown.weights,
    quantConstants: 0,
    adapters: e.breakdown.adapters,
    gradients: e.parts.parameterGradients,
    optimizerStates: e.optimizerTensorBytes,
    activations: e.parts.savedForBackward + e.parts.backwardGradients + e.parts.kept,
    workspace: e.parts.transient,
    hostOffloaded: e.hostBytes,
  };
  return {
    ...base,
    total: e.peakTensorBytes,
    breakdown,
    assumptions: e.assumptions,
    trainableParams: e.trainableParams,
  };
}

/** `train()`'s default GaLore rank, `max(1, floor(hidden / 4))`; 128 when the shape is unknown. */
function trainerGaloreRank(model: { config?: ModelConfigInput; model?: { config: unknown } }): number {
  try {
    const shape = resolvePlanSpec({ method: "full", ...model }).shape;
    return shape ? Math.max(1, Math.floor(shape.hiddenSize / 4)) : 128;
  } catch {
    return 128;
  }
}

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

import type { MemoryPlan } from "./plan_memory.ts";
import { planMemory } from "./plan_memory.ts";
import type { ModelConfigInput, PlanMethod, PlanSpec } from "./plan_spec.ts";
import { resolvePlanSpec } from "./plan_spec.ts";
import { boolean, defineOptions, type FieldsOf, integer, oneOf } from "../options/schema.ts";
import { OPTIMIZER_NAMES, optimizerKind, type OptimizerName } from "../optim/registry.ts";
import { targetModulesField } from "../options/target_modules.ts";
import {
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "../quant/quantize_option.ts";
import { trainFields } from "../train/train_options.ts";
import type { TrainOptions } from "../train/trainer.ts";
import { estimateTrainingMemory } from "./engine_estimate.ts";

/**
 * What the planner needs to know about a run: `train()`'s own options (every one is
 * accepted; those that do not change memory, such as `lr`, are ignored), plus the
 * adapter attached before training (`method`, `r`, `targetModules`, as `attachLoRA`
 * names them), the 4-bit base (`quantize`, as `loadModel` names it), the sequence
 * length and paging.
 */
export interface TrainerPlanOptions extends TrainOptions {
  /** Adapter kind attached before training, or "full" for none. @default "full" */
  method?: "full" | "lora" | "qlora" | "dylora" | "qdylora";
  /** LoRA rank (maximum rank for DyLoRA), as `attachLoRA`'s `r`. @default 8 */
  r?: number;
  /** Adapted modules, as `attachLoRA`'s. @default "all-linear" */
  targetModules?: string[] | "all-linear";
  /** DoRA adapters for lora/qlora, as `attachLoRA`'s `useDora`. @default false */
  useDora?: boolean;
  /** Tokens per sequence. @default tokenize.maxLength (512) */
  seqLen?: number;
  /** 4-bit base for qlora/qdylora (`loadModel`'s `quantize`); false plans lora/dylora. @default "nf4" */
  quantize?: QuantizeOption | false;
  /** Keep paged optimizer state in host memory. @default false */
  paged?: boolean;
}

/** The schema of the planner's trainer options: all of `train()`'s fields plus the run's. */
export const trainerPlanSchema = defineOptions(
  "planForModel",
  {
    ...trainFields,
    method: oneOf(
      "Adapter kind attached before training, or full for none.",
      [
        "full",
        "lora",
        "qlora",
        "dylora",
        "qdylora",
      ] as const,
      { default: "full" },
    ),
    r: integer("LoRA rank (maximum rank for DyLoRA).", { min: 1, default: 8 }),
    targetModules: targetModulesField(),
    useDora: boolean("DoRA adapters for lora/qlora, as attachLoRA's useDora.", { default: false }),
    seqLen: integer("Tokens per sequence (default: tokenize.maxLength).", { min: 1 }),
    quantize: quantizeField(
      '4-bit base for qlora/qdylora ("nf4", "fp4", { type, doubleQuant, blocksize }); false plans lora.',
      {
        off: true,
        default: "nf4",
      },
    ),
    paged: boolean("Keep paged optimizer state in host memory.", { default: false }),
  } satisfies FieldsOf<TrainerPlanOptions>,
  {
    renamed: {
      ...QUANTIZE_RENAMED,
      loraRank: "r",
      loraTargets: "targetModules",
      batch: "batchSize",
    },
  },
);

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
 * const s = planSpecForTrainer("1B", { method: "qlora", optimizer: "adamw8bit", batchSize: 2, lr: 1e-4, saveEvery: 10 });
 * if (s.method !== "qlora" || s.optimizer !== "adamw8bit" || s.computeDtype !== "fp32" || s.microBatch !== 2) {
 *   throw new Error(JSON.stringify(s));
 * }
 * ```
 */
export function planSpecForTrainer(
  config: ModelConfigInput | { config: unknown },
  options?: TrainerPlanOptions,
): PlanSpec {
  const o = trainerPlanSchema.parse(options);
  const optimizer = typeof o.optimizer === "string" ? o.optimizer : o.optimizer.name as OptimizerName;
  if (!OPTIMIZER_NAMES.includes(optimizer)) {
    throw new RangeError(
      `planForModel: cannot plan optimizer "${optimizer}"; name one of ${OPTIMIZER_NAMES.join(", ")}`,
    );
  }
  const galore = optimizerKind(optimizer).cost.galore;
  if (galore && o.method !== "full") {
    throw new RangeError(
      `planForModel: optimizer "${optimizer}" trains full weights; it cannot be combined with method "${o.method}"`,
    );
  }
  let method: PlanMethod = galore ? optimizer as PlanMethod : o.method;
  const quantize = o.quantize as ResolvedQuantize | false;
  if ((method === "qlora" || method === "qdylora") && quantize === false) {
    method = method === "qlora" ? "lora" : "dylora";
  }
  const isModel = typeof config === "object" && config !== null && "config" in config &&
    typeof (config as { config: unknown }).config === "object";
  const where = isModel ? { model: config as { config: unknown } } : { config: config as ModelConfigInput };
  return {
    ...where,
    method,
    weightDtype: "fp32",
    computeDtype: "fp32",
    adapterDtype: "fp32",
    quantize: quantize === false ? "nf4" : quantize,
    r: o.r,
    targetModules: o.targetModules as string[] | "all-linear",
    useDora: o.useDora,
    ...(galore ? {} : { optimizer }),
    paged: o.paged,
    galore: { r: o.galore?.r ?? trainerGaloreRank(where) },
    layerwise: o.layerwise ?? o.galore?.layerwise ?? false,
    microBatch: o.batchSize,
    seqLen: o.seqLen ?? o.tokenize.maxLength,
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
 * const p = planForModel(model, { method: "lora", r: 4, targetModules: "all-linear", batchSize: 2, seqLen: 16 });
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

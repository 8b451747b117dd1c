/**
 * What a memory plan is asked about: the model, the tuning method and the training
 * settings ({@linkcode PlanSpec}), with defaults and validation in
 * {@linkcode resolvePlanSpec}.
 * @module
 */

import type { FloatDtype } from "./_resolve.ts";
import type { ModelShape } from "./model_shape.ts";
import { countParams, linearModules, modelShape } from "./model_shape.ts";
import { getPreset } from "./presets.ts";
import {
  boolean,
  custom,
  defineOptions,
  type FieldsOf,
  integer,
  number,
  object,
  oneOf,
} from "../options/schema.ts";
import { targetModulesField } from "../options/target_modules.ts";
import {
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "../quant/quantize_option.ts";
import { OPTIMIZER_NAMES, optimizerKind, type OptimizerName } from "../optim/registry.ts";
import type { AdapterKindName } from "../adapters/registry.ts";

export type { FloatDtype } from "./_resolve.ts";

/** Tuning method. `dylora`/`qdylora` size adapters at their maximum rank (`loraRank`). */
export type PlanMethod = "full" | "lora" | "qlora" | "dylora" | "qdylora" | "galore" | "galore8bit";
/** All methods, in the order tables list them. */
export const PLAN_METHODS: readonly PlanMethod[] = [
  "full",
  "galore",
  "galore8bit",
  "lora",
  "dylora",
  "qlora",
  "qdylora",
];

/**
 * Adam state storage: fp32 moments, 8-bit blockwise moments, or either paged (moved to
 * host memory, counted in `hostOffloaded` instead of the device total).
 */
export type OptimizerStatePrecision = "fp32" | "8bit" | "paged" | "paged8bit";

/**
 * How bytes are counted. `"detailed"`: from the shapes (weights, constants, adapters,
 * gradients, states, activations, workspace). `"qlora-seed"`: the QLoRA seed's per-
 * parameter arithmetic (full 16 B/param = fp16 weights+grads 4 B + fp32 Adam 12 B; LoRA
 * base 4 B/param + adapter 16 B/param; QLoRA base 1 B/param + adapter 16 B/param; no
 * activations), which reproduces its 160 / 41.6 / 11.6 GB for 10B.
 */
export type Accounting = "detailed" | "qlora-seed";

/** A model given as a preset name, an HF-config-like object, a shape, or a loaded model. */
export type ModelConfigInput = string | Record<string, unknown> | ModelShape;

/** The question a plan answers. Every field but `method` is optional. */
export interface PlanSpec {
  /** Parameter count; overrides the count from `config` (parts are scaled to it). */
  params?: number;
  /** Preset name (`"7B"`, `"falcon-40b"`) or an HF-config-like object. */
  config?: ModelConfigInput;
  /** A loaded model; its `.config` is used. */
  model?: { config: unknown };
  /** Tuning method. */
  method: PlanMethod;
  /** Counting rules. @default "detailed" */
  accounting?: Accounting;
  /** Storage dtype of (unquantized) weights. @default "bf16" */
  weightDtype?: FloatDtype;
  /** Dtype of activations and dequantized weights. @default weightDtype */
  computeDtype?: FloatDtype;
  /** Dtype of LoRA adapter weights and their gradients (PEFT keeps them fp32 for k-bit training). @default "fp32" */
  adapterDtype?: FloatDtype;
  /** 4-bit base for qlora/qdylora: `"nf4"`, `"fp4"` or `{ type, doubleQuant, blocksize }` (as `loadModel`). @default "nf4" */
  quantize?: QuantizeOption;
  /** LoRA rank (maximum rank for DyLoRA), as `attachLoRA`'s `r`. @default 8 */
  r?: number;
  /** Adapted module names per layer (`q_proj`, …) or every linear, as `attachLoRA`'s. @default "all-linear" */
  targetModules?: string[] | "all-linear";
  /** Adapter parameter count, overriding the count from `r` × targets. */
  adapterParams?: number;
  /** DoRA adapters (`attachLoRA`'s `useDora`): LoRA plus one magnitude per output row. @default false */
  useDora?: boolean;
  /** Optimizer, from `train()`'s list; 8-bit moments with `"adamw8bit"`; galore8bit always stores 8-bit moments. @default adamw (galore / galore8bit: the method's own) */
  optimizer?: OptimizerName;
  /** Page the optimizer state to host memory (counted in `hostOffloaded`, not the device total). @default false */
  paged?: boolean;
  /** Keep an fp32 master copy of trainable weights (mixed-precision AMP), 4 B/param, counted with optimizer state. @default false */
  masterWeights?: boolean;
  /** GaLore settings, as `train()`'s `galore`: projection rank `r`. @default { r: 128 } (galore-torch's default; the GaLore seed uses 1024 for 7B) */
  galore?: { r?: number };
  /** GaLore layer-wise stepping: each gradient is applied and freed during backward. @default false */
  layerwise?: boolean;
  /** Sequences per forward/backward. @default 1 */
  microBatch?: number;
  /** Tokens per sequence. @default 512 */
  seqLen?: number;
  /** Recompute activations in backward, keeping only layer inputs. @default false */
  gradientCheckpointing?: boolean;
  /** Micro-batches per optimizer step (does not change peak memory). @default 1 */
  gradAccumSteps?: number;
  /** Fixed extra device bytes (framework/CUDA context), added to `workspace`. @default 0 */
  overheadBytes?: number;
}

/** A spec with every default filled in and the model resolved. */
export interface ResolvedPlanSpec {
  method: PlanMethod;
  accounting: Accounting;
  weightDtype: FloatDtype;
  computeDtype: FloatDtype;
  adapterDtype: FloatDtype;
  quantize: ResolvedQuantize;
  r: number;
  targetModules: string[] | "all-linear";
  useDora: boolean;
  /** The adapter kind of adapter methods (a key of `ADAPTER_KINDS`: lora, dylora or dora). */
  adapterKind: AdapterKindName;
  /** The optimizer (the method's own for galore / galore8bit). */
  optimizer: OptimizerName;
  paged: boolean;
  masterWeights: boolean;
  galore: { r: number };
  layerwise: boolean;
  microBatch: number;
  seqLen: number;
  gradientCheckpointing: boolean;
  gradAccumSteps: number;
  overheadBytes: number;
  /** Derived from `optimizer`, `method` and `paged`: how Adam state is stored. */
  optimizerState: OptimizerStatePrecision;
  /** Parameter count used. */
  params: number;
  /** The model's shape, when a config was given. */
  shape?: ModelShape;
  /** Label for sentences and tables (`llama-2-7b`, `10.0B`). */
  modelLabel: string;
  /** Adapter parameter override, when given. */
  adapterParams?: number;
  /** The caller's original spec (for re-planning with changes). */
  input: PlanSpec;
}

const DTYPES: readonly FloatDtype[] = ["fp32", "fp16", "bf16"];

/** The schema of a {@linkcode PlanSpec} (`planMemory`, `fitPlan`). */
export const planSpecSchema = defineOptions(
  "planMemory",
  {
    params: number("Parameter count; overrides the count from config.", { above: 0 }),
    config: custom<ModelConfigInput>(
      'Preset name ("7B", "falcon-40b") or an HF-config-like object.',
      "a preset name or a config object",
      (v) => typeof v === "string" || (typeof v === "object" && v !== null && !Array.isArray(v)),
      { example: "7B" },
    ),
    model: custom<{ config: unknown }>(
      "A loaded model; its .config is used.",
      "a loaded model with a .config",
      (v) => typeof v === "object" && v !== null && "config" in v,
      {
        example: {
          config: {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            vocab_size: 10,
          },
        },
      },
    ),
    method: oneOf("Tuning method.", PLAN_METHODS, { default: "full" }),
    accounting: oneOf("Counting rules.", ["detailed", "qlora-seed"] as const, { default: "detailed" }),
    weightDtype: oneOf("Storage dtype of (unquantized) weights.", DTYPES, { default: "bf16" }),
    computeDtype: oneOf("Dtype of activations and dequantized weights (default: weightDtype).", DTYPES),
    adapterDtype: oneOf("Dtype of adapter weights and their gradients.", DTYPES, { default: "fp32" }),
    quantize: quantizeField(
      '4-bit base for qlora/qdylora: "nf4", "fp4" or { type, doubleQuant, blocksize }.',
    ),
    r: integer("LoRA rank (maximum rank for DyLoRA).", { min: 1, default: 8 }),
    targetModules: targetModulesField(),
    adapterParams: number("Adapter parameter count, overriding the count from r x targets.", { min: 0 }),
    useDora: boolean("DoRA adapters (attachLoRA's useDora): LoRA plus one magnitude per output row.", {
      default: false,
    }),
    optimizer: oneOf("Optimizer (train()'s list).", OPTIMIZER_NAMES),
    paged: boolean("Page the optimizer state to host memory.", { default: false }),
    masterWeights: boolean("Keep an fp32 master copy of trainable weights.", { default: false }),
    galore: object("GaLore settings.", { r: integer("GaLore projection rank.", { min: 1, default: 128 }) }, {
      filled: true,
      renamed: { rank: "r" },
    }),
    layerwise: boolean("GaLore layer-wise stepping.", { default: false }),
    microBatch: integer("Sequences per forward/backward.", { min: 1, default: 1 }),
    seqLen: integer("Tokens per sequence.", { min: 1, default: 512 }),
    gradientCheckpointing: boolean("Recompute activations in backward.", { default: false }),
    gradAccumSteps: integer("Micro-batches per optimizer step.", { min: 1, default: 1 }),
    overheadBytes: integer("Fixed extra device bytes, added to workspace.", { min: 0, default: 0 }),
  } satisfies FieldsOf<PlanSpec>,
  {
    renamed: {
      ...QUANTIZE_RENAMED,
      loraRank: "r",
      loraTargets: "targetModules",
      galoreRank: "galore.r",
      optimizerState: 'optimizer ("adamw8bit" for 8-bit states) and "paged"',
    },
  },
);

/**
 * Fills defaults, resolves the model (preset, config or `model.config`) and validates.
 *
 * @param spec the plan question
 * @returns the resolved spec
 * @throws {TypeError} for unknown keys; {@link RangeError} for bad values or unknown presets/modules
 * @example
 * ```ts
 * import { resolvePlanSpec } from "./plan_spec.ts";
 * const r = resolvePlanSpec({ config: "7B", method: "qlora" });
 * if (r.params !== 6738415616 || r.quantize.blocksize !== 64 || r.computeDtype !== "bf16") throw new Error("defaults");
 * let threw = false;
 * try { resolvePlanSpec({ config: "7B", method: "lora", loraRnak: 8 } as never); } catch (e) { threw = e instanceof TypeError; }
 * let renamed = "";
 * try { resolvePlanSpec({ config: "7B", method: "lora", loraRank: 8 } as never); } catch (e) { renamed = (e as Error).message; }
 * if (renamed !== 'planMemory: option "loraRank" was renamed to "r"') throw new Error(renamed);
 * if (!threw) throw new Error("expected unknown key rejected");
 * ```
 */
export function resolvePlanSpec(spec: PlanSpec): ResolvedPlanSpec {
  const where = "planMemory";
  const o = planSpecSchema.parse(spec);
  const computeDtype = o.computeDtype ?? o.weightDtype;
  const galoreMethod = o.method === "galore" || o.method === "galore8bit";
  if (o.optimizer !== undefined && optimizerKind(o.optimizer).cost.galore !== galoreMethod) {
    throw new RangeError(
      galoreMethod
        ? `${where}: method "${o.method}" sets the optimizer; leave optimizer out (received "${o.optimizer}")`
        : `${where}: optimizer "${o.optimizer}" trains full weights; use method "${o.optimizer}" instead of "${o.method}"`,
    );
  }
  const optimizer: OptimizerName = galoreMethod ? o.method as OptimizerName : o.optimizer ?? "adamw";
  const eightBit = optimizerKind(optimizer).cost.eightBit;
  const dylora = o.method === "dylora" || o.method === "qdylora";
  if (o.useDora && dylora) {
    throw new RangeError(`${where}: useDora applies to lora/qlora; DyLoRA has no DoRA variant`);
  }
  const adapterKind: AdapterKindName = dylora ? "dylora" : o.useDora ? "dora" : "lora";
  const optimizerState: OptimizerStatePrecision = o.paged
    ? (eightBit ? "paged8bit" : "paged")
    : eightBit
    ? "8bit"
    : "fp32";

  let shape: ModelShape | undefined;
  let modelLabel = "";
  let presetParams: number | undefined;
  if (o.config !== undefined && o.model !== undefined) {
    throw new TypeError(`${where}: give either config or model, not both`);
  }
  if (typeof o.config === "string") {
    const p = getPreset(o.config);
    shape = modelShape(p.config);
    modelLabel = p.name;
    presetParams = p.params;
  } else if (o.config !== undefined) {
    shape = modelShape(o.config);
  } else if (o.model !== undefined) {
    if (typeof o.model !== "object" || o.model === null || !("config" in o.model)) {
      throw new TypeError(`${where}: model must be a loaded model with a .config`);
    }
    shape = modelShape(o.model.config);
  }
  const params = o.params ?? presetParams ?? (shape ? countParams(shape) : undefined);
  if (params === undefined) {
    throw new TypeError(`${where}: give params, config (a preset name or object) or model`);
  }
  if (typeof params !== "number" || !Number.isFinite(params) || params <= 0) {
    throw new RangeError(`${where}: params must be a positive number, received ${params}`);
  }
  if (o.adapterParams !== undefined && !(o.adapterParams >= 0)) {
    throw new RangeError(`${where}: adapterParams must be >= 0, received ${o.adapterParams}`);
  }
  const targetModules = o.targetModules as string[] | "all-linear";
  if (shape && targetModules !== "all-linear") {
    const names = linearModules(shape).map((m) => m.name);
    for (const t of targetModules) {
      if (!names.includes(t)) {
        throw new RangeError(
          `${where}: targetModules has "${t}", which this model lacks; its linear modules are ${
            names.join(", ")
          }`,
        );
      }
    }
  }
  if (!modelLabel) modelLabel = `${(params / 1e9).toFixed(1)}B`;
  return {
    method: o.method,
    accounting: o.accounting,
    weightDtype: o.weightDtype,
    computeDtype,
    adapterDtype: o.adapterDtype,
    quantize: o.quantize as ResolvedQuantize,
    r: o.r,
    targetModules,
    useDora: o.useDora,
    adapterKind,
    optimizer,
    paged: o.paged,
    masterWeights: o.masterWeights,
    galore: o.galore,
    layerwise: o.layerwise,
    microBatch: o.microBatch,
    seqLen: o.seqLen,
    gradientCheckpointing: o.gradientCheckpointing,
    gradAccumSteps: o.gradAccumSteps,
    overheadBytes: o.overheadBytes,
    optimizerState,
    params,
    shape,
    modelLabel,
    adapterParams: o.adapterParams,
    input: spec,
  };
}

/**
 * What a memory plan is asked about: the model, the tuning method and the training
 * settings ({@linkcode PlanSpec}), with defaults and validation in
 * {@linkcode resolvePlanSpec}.
 * @module
 */

import type { FloatDtype } from "./_resolve.ts";
import { checkInt, checkOneOf, resolveKeys } from "./_resolve.ts";
import type { ModelShape } from "./model_shape.ts";
import { countParams, linearModules, modelShape } from "./model_shape.ts";
import { getPreset } from "./presets.ts";
import type { QuantType } from "./quant_bits.ts";
import { QUANT_BLOCKSIZES } from "./quant_bits.ts";

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
  /** 4-bit code family for qlora/qdylora. @default "nf4" */
  quant?: QuantType;
  /** Quantize the absmax constants again (QLoRA). @default true */
  doubleQuant?: boolean;
  /** First-level quantization blocksize. @default 64 */
  blocksize?: number;
  /** LoRA rank (maximum rank for DyLoRA). @default 8 */
  loraRank?: number;
  /** Adapted module names per layer (`q_proj`, …) or every linear. @default "all-linear" */
  loraTargets?: string[] | "all-linear";
  /** Adapter parameter count, overriding the count from `loraRank` × targets. */
  adapterParams?: number;
  /** Adam state storage. galore8bit always stores 8-bit moments. @default "fp32" */
  optimizerState?: OptimizerStatePrecision;
  /** Keep an fp32 master copy of trainable weights (mixed-precision AMP), 4 B/param, counted with optimizer state. @default false */
  masterWeights?: boolean;
  /** GaLore projection rank. @default 128 (galore-torch's default; the GaLore seed uses 1024 for 7B) */
  galoreRank?: number;
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
export interface ResolvedPlanSpec
  extends Required<Omit<PlanSpec, "params" | "config" | "model" | "adapterParams">> {
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

const DEFAULTS = {
  params: undefined as number | undefined,
  config: undefined as ModelConfigInput | undefined,
  model: undefined as { config: unknown } | undefined,
  method: "full" as PlanMethod,
  accounting: "detailed" as Accounting,
  weightDtype: "bf16" as FloatDtype,
  computeDtype: undefined as FloatDtype | undefined,
  adapterDtype: "fp32" as FloatDtype,
  quant: "nf4" as QuantType,
  doubleQuant: true,
  blocksize: 64,
  loraRank: 8,
  loraTargets: "all-linear" as string[] | "all-linear",
  adapterParams: undefined as number | undefined,
  optimizerState: "fp32" as OptimizerStatePrecision,
  masterWeights: false,
  galoreRank: 128,
  layerwise: false,
  microBatch: 1,
  seqLen: 512,
  gradientCheckpointing: false,
  gradAccumSteps: 1,
  overheadBytes: 0,
};

const DTYPES: readonly FloatDtype[] = ["fp32", "fp16", "bf16"];

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
 * if (r.params !== 6738415616 || r.blocksize !== 64 || r.computeDtype !== "bf16") throw new Error("defaults");
 * let threw = false;
 * try { resolvePlanSpec({ config: "7B", method: "lora", loraRnak: 8 } as never); } catch (e) { threw = e instanceof TypeError; }
 * if (!threw) throw new Error("expected unknown key rejected");
 * ```
 */
export function resolvePlanSpec(spec: PlanSpec): ResolvedPlanSpec {
  const where = "planMemory";
  const o = resolveKeys(where, spec, DEFAULTS);
  checkOneOf(where, "method", o.method, PLAN_METHODS);
  checkOneOf(where, "accounting", o.accounting, ["detailed", "qlora-seed"] as const);
  checkOneOf(where, "weightDtype", o.weightDtype, DTYPES);
  checkOneOf(where, "adapterDtype", o.adapterDtype, DTYPES);
  const computeDtype = checkOneOf(where, "computeDtype", o.computeDtype ?? o.weightDtype, DTYPES);
  checkOneOf(where, "quant", o.quant, ["nf4", "fp4"] as const);
  checkOneOf(where, "optimizerState", o.optimizerState, ["fp32", "8bit", "paged", "paged8bit"] as const);
  if (!QUANT_BLOCKSIZES.includes(o.blocksize)) {
    throw new RangeError(
      `${where}: blocksize must be one of ${QUANT_BLOCKSIZES.join(", ")}, received ${o.blocksize}`,
    );
  }
  for (const k of ["doubleQuant", "masterWeights", "layerwise", "gradientCheckpointing"] as const) {
    if (typeof o[k] !== "boolean") {
      throw new TypeError(`${where}: ${k} must be a boolean, received ${typeof o[k]}`);
    }
  }
  for (const k of ["loraRank", "galoreRank", "microBatch", "seqLen", "gradAccumSteps"] as const) {
    checkInt(where, k, o[k]);
  }
  checkInt(where, "overheadBytes", o.overheadBytes, 0);

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
  if (shape && o.loraTargets !== "all-linear") {
    if (!Array.isArray(o.loraTargets) || o.loraTargets.length === 0) {
      throw new TypeError(`${where}: loraTargets must be "all-linear" or a non-empty array of module names`);
    }
    const names = linearModules(shape).map((m) => m.name);
    for (const t of o.loraTargets) {
      if (!names.includes(t)) {
        throw new RangeError(
          `${where}: loraTargets has "${t}", which this model lacks; its linear modules are ${
            names.join(", ")
          }`,
        );
      }
    }
  }
  if (!modelLabel) modelLabel = `${(params / 1e9).toFixed(1)}B`;
  return {
    ...o,
    computeDtype,
    params,
    shape,
    modelLabel,
    adapterParams: o.adapterParams,
    input: spec,
  } as ResolvedPlanSpec;
}

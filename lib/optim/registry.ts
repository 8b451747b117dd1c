/**
 * The optimizers `train()` can create by name, one row each: how to build it and what
 * it costs (the planner and the engine estimate read their state and temporaries from
 * here). Adding an optimizer is its file plus one row.
 * @module
 */
import { createAdamW } from "./adamw.ts";
import { createAdamW8bit } from "./adamw8bit.ts";
import { createLion } from "./lion.ts";
import type { Optimizer } from "./optimizer.ts";

/** Settings `train()` hands to {@linkcode OptimizerKind.create}. */
export interface OptimizerContext {
  weightDecay: number;
  /** AdamW family overrides (each kind keeps its own defaults when absent). */
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** GaLore settings, with the rank used when `r` is absent. */
  galore: {
    r?: number;
    updateProjGap?: number;
    scale?: number;
    projType?: "std" | "reverse_std" | "left" | "right" | "full";
    residual?: boolean;
    defaultRank: number;
  };
}

/** What an optimizer keeps and allocates, for memory planning. */
export interface OptimizerCost {
  /** Moment tensors per trainable element (AdamW 2: m and v; Lion 1). */
  moments: number;
  /** Moments of tensors with ≥ {@linkcode MIN_SIZE_8BIT} elements are 8-bit codes + an fp32 absmax per 256. */
  eightBit: boolean;
  /** 2-D decoder matrices keep their moments in a rank-r projection (GaLore). */
  galore: boolean;
  /**
   * Elements of the temporaries one update of an `n`-element tensor holds at its end (all
   * in one `tf.tidy`); `projected` is the GaLore moment size when the tensor is projected.
   */
  updateTemporaries(n: number, projected?: number): number;
}

/** One optimizer. */
export interface OptimizerKind {
  readonly name: string;
  /** Short human name for plan labels and tables ("AdamW", "Lion"). */
  readonly label: string;
  /** One line for docs and help. */
  readonly doc: string;
  readonly cost: OptimizerCost;
  create(ctx: OptimizerContext): Optimizer | Promise<Optimizer>;
}

/** Tensors smaller than this keep fp32 moments in the 8-bit optimizers (bitsandbytes' `min_8bit_size`). */
export const MIN_SIZE_8BIT = 4096;
/** Elements per absmax block of 8-bit optimizer state. */
export const STATE_BLOCK_8BIT = 256;

// The tfjs-op update (GaLore's moments; AdamW on webgpu): Fp32Moments.direction: m·β1, g·(1−β1),
// add; v·β2, g², ·(1−β2), add; m/bc1, √v, /√bc2, +eps, ÷ → 12 tensors; then dir·lr and the
// subtraction: 14.
const adamOpTemps = (n: number) => 14 * n;
// AdamW's fused update on wasm/cpu (_adamw_fused.ts): the new m, v and parameter.
const adamTemps = (n: number) => 3 * n;
// 8-bit: the direction is a host array turned into one tensor; ·lr and the subtraction. Small
// tensors keep fp32 moments: the fused update in AdamW8bit, the tfjs ops under GaLore.
const adam8Temps = (n: number) => (n >= MIN_SIZE_8BIT ? 3 * n : adamTemps(n));
const adam8OpTemps = (n: number) => (n >= MIN_SIZE_8BIT ? 3 * n : adamOpTemps(n));
// project (1 r-sized), Adam direction on r (12, or 1 when 8-bit), projectBack: matmul,
// ·scale (2 full-size), then ·lr and the subtraction (2 full-size).
const galoreTemps = (eightBit: boolean) => (n: number, r?: number) =>
  r === undefined
    ? (eightBit ? adam8OpTemps(n) : adamOpTemps(n))
    : r + (eightBit && r >= MIN_SIZE_8BIT ? 1 : 12) * r + 4 * n;

const galore = (eightBit: boolean) => (ctx: OptimizerContext) =>
  import("./galore_adamw.ts").then(({ createGaLoreAdamW }) =>
    createGaLoreAdamW({
      weightDecay: ctx.weightDecay,
      beta1: ctx.beta1 ?? 0.9,
      beta2: ctx.beta2 ?? 0.999,
      eps: ctx.eps ?? 1e-8,
      r: ctx.galore.r ?? ctx.galore.defaultRank,
      updateProjGap: ctx.galore.updateProjGap ?? 200,
      scale: ctx.galore.scale ?? 0.25,
      projType: ctx.galore.projType ?? "std",
      residual: ctx.galore.residual ?? false,
      eightBit,
    })
  );

const adamHyper = (ctx: OptimizerContext) => ({
  weightDecay: ctx.weightDecay,
  beta1: ctx.beta1 ?? 0.9,
  beta2: ctx.beta2 ?? 0.999,
  eps: ctx.eps ?? 1e-8,
});

/** An optimizer's name. */
export type OptimizerName = "adamw" | "adamw8bit" | "galore" | "galore8bit" | "lion";

/** Every optimizer `train()` accepts by name. */
export const OPTIMIZERS: Readonly<Record<OptimizerName, OptimizerKind>> = {
  adamw: {
    name: "adamw",
    label: "AdamW",
    doc: "AdamW, PyTorch semantics (two fp32 moments)",
    cost: { moments: 2, eightBit: false, galore: false, updateTemporaries: adamTemps },
    create: (ctx) => createAdamW(adamHyper(ctx)),
  },
  adamw8bit: {
    name: "adamw8bit",
    label: "8-bit AdamW",
    doc: "8-bit AdamW (bitsandbytes blockwise dynamic quantization of both moments)",
    cost: { moments: 2, eightBit: true, galore: false, updateTemporaries: adam8Temps },
    create: (ctx) => createAdamW8bit(adamHyper(ctx)),
  },
  galore: {
    name: "galore",
    label: "GaLore",
    doc: "GaLore-AdamW: full-parameter training with rank-r projected moments",
    cost: { moments: 2, eightBit: false, galore: true, updateTemporaries: galoreTemps(false) },
    create: galore(false),
  },
  galore8bit: {
    name: "galore8bit",
    label: "GaLore 8-bit",
    doc: "GaLore with 8-bit AdamW moments",
    cost: { moments: 2, eightBit: true, galore: true, updateTemporaries: galoreTemps(true) },
    create: galore(true),
  },
  lion: {
    name: "lion",
    label: "Lion",
    doc: "Lion (Chen et al. 2023): sign of interpolated momentum, one fp32 moment; use a 3–10× smaller lr",
    // wasm/cpu: the new parameter and moment, fused (lion.ts). The tfjs ops on webgpu: m·β1,
    // g·(1−β1), add, sign, ·lr, sub; m·β2, g·(1−β2), add → 9 (10 with weight decay).
    cost: { moments: 1, eightBit: false, galore: false, updateTemporaries: (n) => 2 * n },
    create: (ctx) => createLion({ weightDecay: ctx.weightDecay, beta1: ctx.beta1, beta2: ctx.beta2 }),
  },
};

/** The names, in registry order. */
export const OPTIMIZER_NAMES = Object.keys(OPTIMIZERS) as OptimizerName[];

/**
 * The optimizer called `name`, or a RangeError listing the known ones.
 *
 * @example
 * ```ts
 * import { optimizerKind } from "./registry.ts";
 * // Lion keeps one moment per parameter, AdamW two
 * if (optimizerKind("lion").cost.moments !== 1 || optimizerKind("adamw").cost.moments !== 2) throw new Error();
 * ```
 */
export function optimizerKind(name: string): OptimizerKind {
  const k = (OPTIMIZERS as Record<string, OptimizerKind>)[name];
  if (!k) throw new RangeError(`unknown optimizer "${name}" (known: ${OPTIMIZER_NAMES.join(", ")})`);
  return k;
}

/**
 * Bytes of optimizer state for one tensor of `n` elements whose moments are `n` elements
 * (pass the projected size for GaLore): fp32 tensors, or 8-bit host codes plus absmax.
 */
export function momentStateBytes(cost: OptimizerCost, n: number): { tensor: number; host: number } {
  if (cost.eightBit && n >= MIN_SIZE_8BIT) {
    return { tensor: 0, host: cost.moments * (n + 4 * Math.ceil(n / STATE_BLOCK_8BIT)) };
  }
  return { tensor: cost.moments * 4 * n, host: 0 };
}

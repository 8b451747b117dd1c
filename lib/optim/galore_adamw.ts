/**
 * GaLore-AdamW (Zhao et al. 2024): full-parameter training with low-rank gradient
 * states. For a selected 2-D weight W `[M, N]` with gradient G:
 *
 * ```text
 * R  = project(G)                      // [R, N], [M, R] or [R, R]; refreshed every updateProjGap steps
 * D  = Adam direction of R              // moments of R's shape: fp32 tensors or 8-bit host memory
 * W ← W·(1 − lr·wd) − lr · projectBack(D)   // projectBack includes `scale`
 * ```
 *
 * Every other parameter gets plain AdamW (8-bit AdamW when `eightBit`). Weight decay is
 * decoupled and applied first, on the full weight, as in PyTorch AdamW (galore-torch
 * applies it after the update and puts eps before bias correction; the difference is
 * O(lr²·wd) and O(eps)). Moments survive a projector refresh. galore-torch keeps them
 * as they are, in the old coordinates, although the new basis shares almost none of its
 * coordinates with the old one (the refreshed top-R directions come back rotated, reordered
 * and sign-flipped: on the embedded model `|diag(P'ᵀP)|` averages 0.15). With
 * `rotateMoments` (the default) they are carried into the new basis instead: with the change
 * of basis `C = P'ᵀP` (`[R, R]`), `m ← C m` and `v ← (C∘C) v` (for the left side; `m Cᵀ`,
 * `v (C∘C)ᵀ` for the right), exact for m on the part of the gradient both subspaces hold,
 * and the second moment of independent coordinates for v.
 *
 * With `residual`, Fira's term is added: `W ← … − lr · scale · φ ⊙ (G − P·R)`, φ per column
 * (per row for a right projection) `‖D‖ / ‖R‖` (see `residualUpdate`). With `eightBit` the
 * low-rank moments are stored with the R directions as rows (`[R, M]` for a right projection)
 * and 8-bit blocks that never straddle a row.
 *
 * All state (moments, projector, step counter) is per parameter name, so layer-wise
 * stepping — one `step` call per block — is exactly one call with all parameters.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { ParamGrad } from "./optimizer.ts";
import {
  checkStateHeader,
  type OptimizerState,
  type StatefulOptimizer,
  type StateTensor,
  stepsFromJson,
  stepsToJson,
} from "./optimizer_state.ts";
import { adamFields, checkLr, checkUniqueNames } from "./_options.ts";
import { array, boolean, custom, defineOptions, either, type FieldsOf, string } from "../options/schema.ts";
import { Fp32Moments, type MomentStore } from "./_moments.ts";
import { Moments8bit } from "./_moments_8bit.ts";
import {
  type BasisChange,
  createGaLoreProjector,
  type GaLoreProjector,
  projectorFields,
  type ProjectorState,
  type ProjType,
  type RefreshMethod,
} from "./galore_projector.ts";

/** Selects GaLore parameters: a predicate, substrings of the name, or a RegExp on the name. */
export type GaLoreParamSelector = ((name: string, shape: readonly number[]) => boolean) | string[] | RegExp;

/** Options for {@linkcode createGaLoreAdamW}. */
export interface GaLoreAdamWOptions {
  /** Projection rank (`r`, as every rank). */
  r: number;
  /** Steps between projector refreshes. @default {200} */
  updateProjGap?: number;
  /** Multiplier of the projected-back update (like LoRA's alpha/r). @default {0.25} */
  scale?: number;
  /** Which side(s) to project. @default {"std"} */
  projType?: ProjType;
  /** Projector refresh method. @default {"randomized"} */
  refresh?: RefreshMethod;
  /** Keep Adam moments blockwise 8-bit in host memory. @default {false} */
  eightBit?: boolean;
  /** Carry the moments into the new basis at each projector refresh (see the module docs). @default {true} */
  rotateMoments?: boolean;
  /** With `eightBit`: stochastic instead of nearest rounding of the 8-bit moments. @default {false} */
  stochasticRounding?: boolean;
  /**
   * Also apply the gradient's part outside the subspace, scaled like Fira (Chen et al. 2024,
   * "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?"): no extra state,
   * one more `[M, N]` temporary per update. @default {false}
   */
  residual?: boolean;
  /** Decay of the first moment. @default {0.9} */
  beta1?: number;
  /** Decay of the second moment. @default {0.999} */
  beta2?: number;
  /** Added to the bias-corrected √v. @default {1e-8} */
  eps?: number;
  /** Decoupled weight decay. @default {0} */
  weightDecay?: number;
  /**
   * Which parameters are GaLore'd; only 2-D ones can be.
   * @default {/attn|mlp/ on the name, for 2-D weights (the GaLore tutorial's targets)}
   */
  galoreParams?: GaLoreParamSelector;
  /** Power iterations of the randomized refresh. @default {4} */
  powerIters?: number;
  /** Oversampling columns of the randomized refresh. @default {8} */
  oversample?: number;
}

/** A GaLore optimizer, with the extra introspection the memory breakdown needs. */
export interface GaLoreOptimizer extends StatefulOptimizer {
  /** True when `name` with `shape` is trained through a projector. */
  isGaLore(name: string, shape: readonly number[]): boolean;
  /** Names of the GaLore'd parameters seen so far. */
  galoreNames(): string[];
  /** Projector of a GaLore'd parameter (after its first step). */
  projector(name: string): GaLoreProjector | undefined;
  /** State bytes split into moments and projectors. */
  stateBreakdown(): { moments: number; projectors: number };
}

/** The schema of {@linkcode createGaLoreAdamW}'s options. */
export const galoreAdamWSchema = defineOptions(
  "createGaLoreAdamW",
  {
    ...projectorFields,
    eightBit: boolean("Keep Adam moments blockwise 8-bit in host memory.", { default: false }),
    rotateMoments: boolean("Carry the moments into the new basis at each projector refresh.", {
      default: true,
    }),
    stochasticRounding: boolean("With eightBit: stochastic rounding of the 8-bit moments.", {
      default: false,
    }),
    residual: boolean("Also apply the gradient outside the subspace, scaled like Fira.", { default: false }),
    ...adamFields,
    galoreParams: either(
      "Which parameters are GaLore'd (2-D only): a predicate, name substrings or a RegExp.",
      [
        custom<GaLoreParamSelector>("A predicate.", "a function", (v) => typeof v === "function", {
          example: () => true,
        }),
        array("Name substrings.", string("A substring.")),
        custom<GaLoreParamSelector>("A RegExp on the name.", "a RegExp", (v) => v instanceof RegExp, {
          example: /mlp/,
        }),
      ],
      { default: /attn|mlp/ as GaLoreParamSelector },
    ),
  } satisfies FieldsOf<GaLoreAdamWOptions>,
  { renamed: { rank: "r", update_proj_gap: "updateProjGap", proj_type: "projType" } },
);

/**
 * Fira's residual term (Chen et al. 2024): the part of the gradient outside the subspace,
 * `G − P·R`, scaled per column (left projection; per row for a right one) by how much Adam
 * scaled that column's low-rank gradient, `‖D_:n‖ / ‖R_:n‖`, times `scale`. `[M, N]`.
 */
function residualUpdate(proj: GaLoreProjector, g: tf.Tensor2D, r: tf.Tensor2D, d: tf.Tensor2D): tf.Tensor2D {
  const scale = proj.options.scale;
  const inSub = tf.div(proj.projectBack(r), scale); // P·R  [M, N]
  const rest = tf.sub(g, inSub);
  if (proj.left && proj.right) {
    const phi = tf.div(tf.norm(d), tf.add(tf.norm(r), 1e-30));
    return tf.mul(rest, tf.mul(phi, scale));
  }
  // Norms over the projected axis: per column for a left projection ([R, N]), per row for a right one ([M, R]).
  const axis = proj.left ? 0 : 1;
  const phi = tf.div(tf.norm(d, "euclidean", axis, true), tf.add(tf.norm(r, "euclidean", axis, true), 1e-30));
  return tf.mul(rest, tf.mul(phi, scale));
}

/**
 * Low-rank moments `m, v` in the new basis after a refresh (see the module docs); `transposed`
 * when they are stored transposed (`[R, M]` for a right projection).
 */
function rotate(c: BasisChange, m: tf.Tensor, v: tf.Tensor, transposed: boolean): [tf.Tensor, tf.Tensor] {
  let m2 = m as tf.Tensor2D, v2 = v as tf.Tensor2D;
  const left = transposed ? c.right : c.left, right = transposed ? c.left : c.right;
  if (left) {
    m2 = tf.matMul(left, m2);
    v2 = tf.matMul(tf.square(left), v2);
  }
  if (right) {
    m2 = tf.matMul(m2, right, false, true);
    v2 = tf.matMul(v2, tf.square(right), false, true);
  }
  return [m2, v2];
}

/**
 * Fills defaults and validates (TypeError for unknown keys or a bad selector, RangeError for values).
 *
 * @example
 * ```ts
 * import { resolveGaLoreAdamWOptions } from "./galore_adamw.ts";
 * const o = resolveGaLoreAdamWOptions({ r: 8 });
 * if (o.scale !== 0.25 || o.updateProjGap !== 200 || o.refresh !== "randomized") throw new Error("defaults");
 * ```
 */
export function resolveGaLoreAdamWOptions(options: GaLoreAdamWOptions): Required<GaLoreAdamWOptions> {
  return galoreAdamWSchema.parse(options) as Required<GaLoreAdamWOptions>;
}

/**
 * Creates a GaLore-AdamW optimizer (`name` "galore", or "galore8bit" with `eightBit`).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createGaLoreAdamW } from "./galore_adamw.ts";
 * await initEngine({ backend: "cpu" });
 * const w = tf.variable(tf.zeros([16, 8])), b = tf.variable(tf.zeros([8]));
 * const gw = tf.randomNormal([16, 8], 0, 1, "float32", 1), gb = tf.ones([8]);
 * const opt = createGaLoreAdamW({ r: 2 });
 * opt.step([
 *   { name: "layers.0.mlp.up_proj.weight", variable: w, grad: gw },
 *   { name: "layers.0.norm.weight", variable: b, grad: gb },
 * ], 1e-2);
 * if (opt.galoreNames().join() !== "layers.0.mlp.up_proj.weight") throw new Error("only the mlp weight");
 * // moments: 2×[16, 2] + 2×[8] fp32; projector [8, 2]
 * const s = opt.stateBreakdown();
 * if (s.moments !== 4 * (2 * 32 + 2 * 8) || s.projectors !== 4 * 16) throw new Error(JSON.stringify(s));
 * opt.dispose(); tf.dispose([w, b, gw, gb]);
 * ```
 */
export function createGaLoreAdamW(options: GaLoreAdamWOptions): GaLoreOptimizer {
  const o = resolveGaLoreAdamWOptions(options);
  // 8-bit: one absmax per block of 256 within a row of rank direction (the low-rank state is
  // stored with its R directions as rows), so a block never mixes directions whose scales
  // differ by the gradient's singular values.
  const moments: MomentStore = o.eightBit
    ? new Moments8bit(o, 256, 4096, { rowBlocks: true, stochastic: o.stochasticRounding })
    : new Fp32Moments(o);
  const steps = new Map<string, number>();
  const projectors = new Map<string, GaLoreProjector>();
  const sel = o.galoreParams;

  const isGaLore = (name: string, shape: readonly number[]): boolean => {
    const chosen = typeof sel === "function"
      ? sel(name, shape)
      : sel instanceof RegExp
      ? sel.test(name)
      : sel.some((s) => name.includes(s));
    if (!chosen) return false;
    if (shape.length !== 2) {
      if (typeof sel === "function") {
        throw new TypeError(
          `GaLore: galoreParams selected "${name}" of shape [${shape}], but only 2-D weights can be projected`,
        );
      }
      return false;
    }
    return true;
  };

  const projectorFor = (name: string): GaLoreProjector => {
    let p = projectors.get(name);
    if (!p) {
      p = createGaLoreProjector({
        r: o.r,
        updateProjGap: o.updateProjGap,
        scale: o.scale,
        projType: o.projType,
        refresh: o.refresh,
        powerIters: o.powerIters,
        oversample: o.oversample,
      });
      projectors.set(name, p);
    }
    return p;
  };

  const name = o.eightBit ? "galore8bit" : "galore";
  const settings = {
    rotateMoments: o.rotateMoments,
    stochasticRounding: o.stochasticRounding,
    residual: o.residual,
    beta1: o.beta1,
    beta2: o.beta2,
    eps: o.eps,
    rank: o.r,
    updateProjGap: o.updateProjGap,
    scale: o.scale,
    projType: o.projType,
    refresh: o.refresh,
    powerIters: o.powerIters,
    oversample: o.oversample,
  };
  const where = "GaLoreAdamW.loadState()";

  const projectorBytes = () => [...projectors.values()].reduce((s, p) => s + p.stateBytes(), 0);

  return {
    name,
    step(params: ParamGrad[], lr: number): void {
      checkLr("GaLoreAdamW.step()", lr);
      checkUniqueNames("GaLoreAdamW.step()", params.map((p) => p.name));
      for (const { name, variable, grad } of params) {
        const t = (steps.get(name) ?? 0) + 1;
        const galore = isGaLore(name, variable.shape);
        tf.tidy(() => {
          let update: tf.Tensor;
          if (galore) {
            const proj = projectorFor(name);
            // 8-bit states keep the R directions as rows: a right-projected [M, R] is stored as [R, M].
            const rows = o.eightBit && proj.right !== null && proj.left === null;
            const r = proj.project(
              grad as tf.Tensor2D,
              o.rotateMoments
                ? (c) => moments.transform(name, (m, v) => rotate(c, m, v, rows), t)
                : undefined,
            );
            const rowsNow = o.eightBit && proj.right !== null && proj.left === null; // first call: set by project
            const d = rowsNow
              ? tf.transpose(moments.direction(name, tf.transpose(r), t))
              : moments.direction(name, r, t);
            update = proj.projectBack(d as tf.Tensor2D); // [M, N], × scale
            if (o.residual) {
              update = tf.add(update, residualUpdate(proj, grad as tf.Tensor2D, r, d as tf.Tensor2D));
            }
          } else update = moments.direction(name, grad, t);
          const decayed = o.weightDecay > 0 ? tf.mul(variable, 1 - lr * o.weightDecay) : variable;
          variable.assign(tf.sub(decayed, tf.mul(update, lr)));
        });
        steps.set(name, t);
      }
    },
    stateBytes: () => moments.bytes() + projectorBytes(),
    stateBreakdown: () => ({ moments: moments.bytes(), projectors: projectorBytes() }),
    saveState(): OptimizerState {
      const tensors: Record<string, StateTensor> = {};
      moments.exportInto(tensors);
      const proj: Record<string, Omit<ProjectorState, "left" | "right">> = {};
      for (const [k, p] of projectors) {
        const { left, right, ...counters } = p.exportState();
        proj[k] = counters;
        if (left) tensors[`projector.left/${k}`] = left;
        if (right) tensors[`projector.right/${k}`] = right;
      }
      return { name, meta: { ...settings, steps: stepsToJson(steps), projectors: proj }, tensors };
    },
    loadState(state: OptimizerState): void {
      checkStateHeader(state, name, settings, where);
      const proj = state.meta.projectors as
        | Record<string, Omit<ProjectorState, "left" | "right">>
        | undefined;
      if (typeof proj !== "object" || proj === null) {
        throw new TypeError(`${where}: the state has no projectors`);
      }
      moments.importFrom(state.tensors);
      stepsFromJson(steps, state.meta.steps, where);
      for (const p of projectors.values()) p.dispose();
      projectors.clear();
      for (const [k, counters] of Object.entries(proj)) {
        projectorFor(k).importState({
          ...counters,
          left: state.tensors[`projector.left/${k}`] ?? null,
          right: state.tensors[`projector.right/${k}`] ?? null,
        });
      }
    },
    isGaLore,
    galoreNames: () => [...projectors.keys()],
    projector: (name: string) => projectors.get(name),
    dispose(): void {
      moments.dispose();
      for (const p of projectors.values()) p.dispose();
      projectors.clear();
      steps.clear();
    },
  };
}

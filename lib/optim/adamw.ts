/**
 * AdamW with decoupled weight decay, following PyTorch's `torch.optim.AdamW`
 * (Loshchilov & Hutter 2019). For each parameter, with its own step counter t:
 *
 * ```text
 * p ← p − lr·wd·p                      (decoupled weight decay, applied first)
 * m ← β1·m + (1−β1)·g
 * v ← β2·v + (1−β2)·g²
 * p ← p − lr · (m / (1−β1ᵗ)) / (√v / √(1−β2ᵗ) + eps)
 * ```
 *
 * State (m, v as fp32 `tf.Variable`s and the step counter) is keyed by
 * {@linkcode ParamGrad.name}, so calling `step` once per block (layer-wise) is exactly
 * one call with all parameters.
 * @module
 */
import type { ParamGrad } from "./optimizer.ts";
import {
  checkStateHeader,
  type OptimizerState,
  type StatefulOptimizer,
  type StateTensor,
  stepsFromJson,
  stepsToJson,
} from "./optimizer_state.ts";
import { adamFields } from "./_options.ts";
import { defineOptions, type FieldsOf } from "../options/schema.ts";
import { Fp32Moments } from "./_moments.ts";
import { adamWStep } from "./_adam_step.ts";

/** Options for {@linkcode createAdamW}. */
export interface AdamWOptions {
  /** Decay of the first moment. @default {0.9} */
  beta1?: number;
  /** Decay of the second moment. @default {0.999} */
  beta2?: number;
  /** Added to the bias-corrected √v. @default {1e-8} */
  eps?: number;
  /** Decoupled weight decay (multiplied by lr). @default {0} */
  weightDecay?: number;
}

/**
 * Fills defaults, rejects unknown keys (TypeError) and out-of-range values (RangeError).
 *
 * @example
 * ```ts
 * import { resolveAdamWOptions } from "./adamw.ts";
 * const o = resolveAdamWOptions({ weightDecay: 0.01 });
 * if (o.beta1 !== 0.9 || o.beta2 !== 0.999 || o.eps !== 1e-8 || o.weightDecay !== 0.01) throw new Error("defaults");
 * let threw = false;
 * try { resolveAdamWOptions({ betta1: 0.9 } as never); } catch (e) { threw = e instanceof TypeError; }
 * if (!threw) throw new Error("unknown keys must be rejected");
 * ```
 */
export function resolveAdamWOptions(options: AdamWOptions = {}): Required<AdamWOptions> {
  return adamWSchema.parse(options);
}

/** The schema of {@linkcode createAdamW}'s options. */
export const adamWSchema = defineOptions("createAdamW", adamFields satisfies FieldsOf<AdamWOptions>, {
  renamed: { betas: "beta1 and beta2", weight_decay: "weightDecay" },
});

/**
 * Creates an AdamW optimizer with PyTorch semantics (decoupled weight decay, bias correction).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createAdamW } from "./adamw.ts";
 * await initEngine({ backend: "cpu" });
 * const w = tf.variable(tf.tensor1d([1, -2]));
 * const opt = createAdamW({ weightDecay: 0.1 });
 * const g = tf.tensor1d([0.5, -3]);
 * opt.step([{ name: "w", variable: w, grad: g }], 0.01);
 * // first step: p·(1 − lr·wd) − lr·sign(g) (m̂/√v̂ = ±1 up to eps)
 * const got = w.dataSync();
 * if (Math.abs(got[0] - (1 * 0.999 - 0.01)) > 1e-6) throw new Error(`w[0]=${got[0]}`);
 * if (Math.abs(got[1] - (-2 * 0.999 + 0.01)) > 1e-6) throw new Error(`w[1]=${got[1]}`);
 * if (opt.stateBytes() !== 2 * 2 * 4) throw new Error("two fp32 moments of 2 elements");
 * opt.dispose(); g.dispose(); w.dispose();
 * ```
 */
export function createAdamW(options: AdamWOptions = {}): StatefulOptimizer {
  const o = resolveAdamWOptions(options);
  const moments = new Fp32Moments(o);
  const steps = new Map<string, number>();
  return {
    name: "adamw",
    step(params: ParamGrad[], lr: number): void {
      adamWStep("AdamW.step()", params, lr, moments, steps, o.weightDecay);
    },
    stateBytes: () => moments.bytes(),
    saveState(): OptimizerState {
      const tensors: Record<string, StateTensor> = {};
      moments.exportInto(tensors);
      return {
        name: "adamw",
        meta: { ...{ beta1: o.beta1, beta2: o.beta2, eps: o.eps }, steps: stepsToJson(steps) },
        tensors,
      };
    },
    loadState(state: OptimizerState): void {
      checkStateHeader(state, "adamw", { beta1: o.beta1, beta2: o.beta2, eps: o.eps }, "AdamW.loadState()");
      moments.importFrom(state.tensors);
      stepsFromJson(steps, state.meta.steps, "AdamW.loadState()");
    },
    dispose(): void {
      moments.dispose();
      steps.clear();
    },
  };
}

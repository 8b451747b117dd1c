/**
 * Learning-rate schedules: linear warmup, then cosine, linear or constant.
 * @module
 */

/** Schedule kinds. */
export type ScheduleKind = "cosine" | "linear" | "constant";

/** Options for {@linkcode learningRateAt}. */
export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Total optimizer steps. */
  totalSteps: number;
  /** Steps of linear warmup from 0. @default {0} */
  warmupSteps?: number;
  /** Decay after warmup. @default {"cosine"} */
  schedule?: ScheduleKind;
  /** Final LR as a fraction of `lr` (cosine/linear). @default {0} */
  minLrRatio?: number;
}

/**
 * Learning rate for 1-based `step` of `totalSteps`.
 *
 * Warmup rises linearly, `lr·step/(warmupSteps+1)`, so the first step already trains; the
 * peak `lr` is used by step `warmupSteps + 1`; the decay then reaches its final value
 * (`minLrRatio·lr`) at step `totalSteps + 1`, one past the last step, so the last step
 * still trains (it used to get exactly 0, wasting it, and `steps: 1` trained nothing).
 * Transformers' `get_*_schedule_with_warmup` evaluated at the 0-based index has the same
 * decay, but a first step at lr 0 when warming up.
 *
 * @example
 * ```ts
 * import { learningRateAt } from "./schedule.ts";
 * const o = { lr: 1, totalSteps: 10, warmupSteps: 2 };
 * if (learningRateAt(1, o) !== 1 / 3 || learningRateAt(2, o) !== 2 / 3) throw new Error("warmup");
 * if (learningRateAt(3, o) !== 1) throw new Error("peak right after warmup");
 * if (!(learningRateAt(10, o) > 0.03) || Math.abs(learningRateAt(11, o)) > 1e-12) throw new Error("ends after the last step");
 * if (learningRateAt(1, { lr: 1, totalSteps: 1 }) !== 1) throw new Error("steps: 1 trains at the peak");
 * ```
 */
export function learningRateAt(step: number, options: ScheduleOptions): number {
  const { lr, totalSteps } = options;
  const warm = options.warmupSteps ?? 0;
  const min = (options.minLrRatio ?? 0) * lr;
  if (step <= warm) return lr * step / (warm + 1);
  const progress = Math.min(1, (step - warm - 1) / Math.max(1, totalSteps - warm));
  const kind = options.schedule ?? "cosine";
  switch (kind) {
    case "constant":
      return lr;
    case "linear":
      return min + (lr - min) * (1 - progress);
    case "cosine":
      return min + (lr - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
    default:
      throw new RangeError(`unknown schedule "${kind}" (use cosine, linear or constant)`);
  }
}

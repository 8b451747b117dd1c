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
 * Learning rate for 1-based `step` (as Transformers' `get_*_schedule_with_warmup`).
 *
 * @example
 * ```ts
 * import { learningRateAt } from "./schedule.ts";
 * const o = { lr: 1, totalSteps: 10, warmupSteps: 2 };
 * if (learningRateAt(1, o) !== 0.5 || learningRateAt(2, o) !== 1) throw new Error("warmup");
 * if (Math.abs(learningRateAt(10, o)) > 1e-12) throw new Error("cosine ends at 0");
 * ```
 */
export function learningRateAt(step: number, options: ScheduleOptions): number {
  const { lr, totalSteps } = options;
  const warm = options.warmupSteps ?? 0;
  const min = (options.minLrRatio ?? 0) * lr;
  if (step <= warm) return lr * step / Math.max(1, warm);
  const progress = Math.min(1, (step - warm) / Math.max(1, totalSteps - warm));
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

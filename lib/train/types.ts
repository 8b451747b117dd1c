/**
 * Records the trainer reports (shared by the trainer, notebook helpers and planner).
 * @module
 */

import type { MemoryRecord } from "../engine/memory.ts";

/** Memory measured at the end of a step (defined with the probe in `lib/engine/memory.ts`). */
export type { MemoryRecord };

/** One optimizer step as reported by `train()` and to `onStep`. */
export interface StepRecord {
  /** 1-based optimizer step. */
  step: number;
  /** Steps this run will take (for progress bars and ETAs). */
  totalSteps?: number;
  /** Mean loss per target token over the step (all accumulated micro-batches). */
  loss: number;
  /** Learning rate used for this step. */
  lr: number;
  /** Target tokens in the step (all micro-batches). */
  tokens: number;
  /** Wall time of the step in seconds. */
  seconds: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Eval loss when an eval ran at this step. */
  evalLoss?: number;
  /** Memory at the end of the step. */
  memory: MemoryRecord;
}

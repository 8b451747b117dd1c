/**
 * Records the trainer reports (shared by the trainer, notebook helpers and planner).
 * @module
 */

/** Memory measured at the end of a step (bytes). */
export interface MemoryRecord {
  /** Bytes held by live tfjs tensors (`tf.memory().numBytes`). */
  tensorBytes: number;
  /** Peak tfjs tensor bytes during the step (from `tf.profile`), when measured. */
  peakTensorBytes?: number;
  /** Live tfjs tensors. */
  numTensors: number;
  /** Size of the wasm heap (0 on other backends); it never shrinks. */
  heapBytes: number;
  /** Process resident set size. */
  rssBytes: number;
  /** Breakdown by owner (weights, adapters, gradients, optimizer, activations, other) when known. */
  breakdown?: Record<string, number>;
}

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

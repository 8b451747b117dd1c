/**
 * Padding examples into a micro-batch with next-token targets and loss weights.
 *
 * Dimension legend: B batch, T padded length.
 * @module
 */
import { type Example, IGNORE_INDEX } from "./data.ts";

/** A padded micro-batch (plain arrays; tensors are made by the step). */
export interface MicroBatch {
  /** Input ids `[B][T]`, right-padded with the pad id. */
  ids: number[][];
  /** 1 = real token, 0 = padding, `[B][T]`. */
  attentionMask: number[][];
  /** Next-token target per position `[B·T]` (0 where ignored). */
  targets: Int32Array;
  /** 1 where the target counts, else 0, `[B·T]`. */
  weights: Float32Array;
  /** Number of counted targets (sum of weights). */
  numTargets: number;
  /** Packed rows only: position of each token `[B][T]`, restarting at 0 for every example. */
  positionIds?: number[][];
  /** Packed rows only: example number of each token `[B][T]` (block-diagonal causal mask). */
  segmentIds?: number[][];
}

/**
 * The forward options of a micro-batch: its padding mask, plus positions and segments when packed.
 *
 * @example
 * ```ts
 * import { forwardOptionsOf, makeMicroBatch } from "./batching.ts";
 * const o = forwardOptionsOf(makeMicroBatch([{ ids: [1, 2], labels: [1, 2] }], 0));
 * if (o.segmentIds !== undefined || o.attentionMask.length !== 1) throw new Error("unpacked");
 * ```
 */
export function forwardOptionsOf(
  batch: MicroBatch,
): { attentionMask: number[][]; positionIds?: number[][]; segmentIds?: number[][] } {
  return {
    attentionMask: batch.attentionMask,
    ...(batch.positionIds ? { positionIds: batch.positionIds } : {}),
    ...(batch.segmentIds ? { segmentIds: batch.segmentIds } : {}),
  };
}

/**
 * Pads `examples` to the longest one: position t predicts `labels[t + 1]`.
 *
 * @example
 * ```ts
 * import { makeMicroBatch } from "./batching.ts";
 * const b = makeMicroBatch([{ ids: [1, 2, 3], labels: [1, 2, 3] }, { ids: [1, 4], labels: [-100, 4] }], 0);
 * if (b.numTargets !== 3) throw new Error("expected 2 + 1 targets");
 * if (b.ids[1].join() !== "1,4,0") throw new Error("right padding");
 * ```
 */
export function makeMicroBatch(examples: Example[], padId: number): MicroBatch {
  if (examples.length === 0) throw new RangeError("a micro-batch needs at least one example");
  const T = Math.max(...examples.map((e) => e.ids.length));
  const B = examples.length;
  const targets = new Int32Array(B * T), weights = new Float32Array(B * T);
  const ids: number[][] = [], attentionMask: number[][] = [];
  let numTargets = 0;
  examples.forEach((ex, b) => {
    const L = ex.ids.length;
    ids.push([...ex.ids, ...new Array(T - L).fill(padId)]);
    attentionMask.push([...new Array(L).fill(1), ...new Array(T - L).fill(0)]);
    for (let t = 0; t + 1 < L; t++) {
      const y = ex.labels[t + 1];
      if (y !== IGNORE_INDEX) {
        targets[b * T + t] = y;
        weights[b * T + t] = 1;
        numTargets++;
      }
    }
  });
  return { ids, attentionMask, targets, weights, numTargets };
}

/**
 * Splits examples into micro-batches of `batchSize` in order (the last may be smaller).
 */
export function chunk<T>(items: T[], size: number): T[][] {
  if (!Number.isInteger(size) || size <= 0) {
    throw new RangeError(`batch size must be a positive integer, got ${size}`);
  }
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

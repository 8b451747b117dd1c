/**
 * Packing: several tokenized examples concatenated into one row up to the sequence length, so a
 * micro-batch holds far fewer padding positions. Each token carries its example's number
 * (`segmentIds`, giving a block-diagonal causal mask: no token sees another example) and its
 * position inside that example (`positionIds`, restarting at 0), so a packed row computes exactly
 * what the examples compute one by one: same loss, same gradients.
 *
 * Dimension legend: B rows, T row length.
 * @module
 */
import { type Example, IGNORE_INDEX } from "./data.ts";
import type { MicroBatch } from "./batching.ts";

/**
 * Groups examples, in order, into rows of at most `seqLen` tokens (first fit: a row is closed
 * when the next example does not fit). An example longer than `seqLen` is refused (tokenize with
 * `maxLength` ≤ `seqLen` first).
 *
 * @example
 * ```ts
 * import { packExamples } from "./packing.ts";
 * const ex = (n: number) => ({ ids: Array(n).fill(1), labels: Array(n).fill(1) });
 * const rows = packExamples([ex(3), ex(4), ex(2), ex(6)], 8);
 * if (rows.map((r) => r.length).join() !== "2,2") throw new Error(JSON.stringify(rows.map((r) => r.length)));
 * ```
 */
export function packExamples(examples: readonly Example[], seqLen: number): Example[][] {
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new RangeError(`packing: the sequence length must be a positive integer, got ${seqLen}`);
  }
  const rows: Example[][] = [];
  let row: Example[] = [], used = 0;
  examples.forEach((ex, i) => {
    if (ex.ids.length > seqLen) {
      throw new RangeError(
        `packing: example ${i} has ${ex.ids.length} tokens, more than the packed length ${seqLen}; ` +
          "set tokenize.maxLength to it or less",
      );
    }
    if (row.length && used + ex.ids.length > seqLen) {
      rows.push(row);
      row = [];
      used = 0;
    }
    row.push(ex);
    used += ex.ids.length;
  });
  if (row.length) rows.push(row);
  return rows;
}

/**
 * A micro-batch of packed rows (each a list of examples laid end to end, right-padded to the
 * longest row): position t predicts the next token of the same example only; the first token of
 * each example is never a target (it is not one unpacked either).
 *
 * @example
 * ```ts
 * import { makePackedMicroBatch } from "./packing.ts";
 * const b = makePackedMicroBatch([[{ ids: [5, 6, 7], labels: [5, 6, 7] }, { ids: [8, 9], labels: [8, 9] }]], 0);
 * if (b.positionIds![0].join() !== "0,1,2,0,1" || b.segmentIds![0].join() !== "1,1,1,2,2") throw new Error();
 * if (b.numTargets !== 3) throw new Error("6, 7 and 9: the 8 is the start of an example");
 * ```
 */
export function makePackedMicroBatch(rows: readonly (readonly Example[])[], padId: number): MicroBatch {
  if (rows.length === 0 || rows.some((r) => r.length === 0)) {
    throw new RangeError("a packed micro-batch needs at least one row, each with an example");
  }
  const lengths = rows.map((r) => r.reduce((s, e) => s + e.ids.length, 0));
  const T = Math.max(...lengths), B = rows.length;
  const targets = new Int32Array(B * T), weights = new Float32Array(B * T);
  const ids: number[][] = [], attentionMask: number[][] = [], positionIds: number[][] = [];
  const segmentIds: number[][] = [];
  let numTargets = 0;
  rows.forEach((row, b) => {
    const r: number[] = [], pos: number[] = [], seg: number[] = [];
    row.forEach((ex, k) => {
      const start = r.length;
      r.push(...ex.ids);
      ex.ids.forEach((_, t) => {
        pos.push(t);
        seg.push(k + 1);
      });
      for (let t = 0; t + 1 < ex.ids.length; t++) {
        const y = ex.labels[t + 1];
        if (y !== IGNORE_INDEX) {
          targets[b * T + start + t] = y;
          weights[b * T + start + t] = 1;
          numTargets++;
        }
      }
    });
    const pad = T - r.length;
    ids.push([...r, ...new Array(pad).fill(padId)]);
    attentionMask.push([...new Array(r.length).fill(1), ...new Array(pad).fill(0)]);
    positionIds.push([...pos, ...new Array(pad).fill(0)]);
    segmentIds.push([...seg, ...new Array(pad).fill(0)]);
  });
  return { ids, attentionMask, targets, weights, numTargets, positionIds, segmentIds };
}

/**
 * The share of padding positions in micro-batches of `batchSize`, unpacked (each example padded to
 * the longest of its micro-batch) and packed into rows of `seqLen`: what packing saves.
 *
 * @example
 * ```ts
 * import { paddingFractions } from "./packing.ts";
 * const ex = (n: number) => ({ ids: Array(n).fill(1), labels: Array(n).fill(1) });
 * const f = paddingFractions([ex(8), ex(2), ex(2), ex(2)], 2, 8);
 * if (!(f.packed < f.unpacked)) throw new Error(JSON.stringify(f));
 * ```
 */
export function paddingFractions(
  examples: readonly Example[],
  batchSize: number,
  seqLen: number,
): { unpacked: number; packed: number; tokens: number } {
  const tokens = examples.reduce((s, e) => s + e.ids.length, 0);
  const padded = (groups: number[][]) => groups.reduce((s, g) => s + g.length * Math.max(...g), 0);
  const chunks = <T>(xs: T[]) => {
    const out: T[][] = [];
    for (let i = 0; i < xs.length; i += batchSize) out.push(xs.slice(i, i + batchSize));
    return out;
  };
  const unpacked = padded(chunks(examples.map((e) => e.ids.length)));
  const rows = packExamples(examples, seqLen).map((r) => r.reduce((s, e) => s + e.ids.length, 0));
  const packed = padded(chunks(rows));
  return { unpacked: 1 - tokens / unpacked, packed: 1 - tokens / packed, tokens };
}

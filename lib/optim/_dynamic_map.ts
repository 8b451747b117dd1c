/**
 * Internal: bitsandbytes' dynamic (tree) 8-bit code tables and blockwise quantization
 * into host memory (Uint8Array codes + Float32Array absmax per block).
 *
 * Dimension legend: N elements, K = ceil(N / blocksize) blocks.
 * @module
 */

/**
 * The 256-entry dynamic map of bitsandbytes `create_dynamic_map(signed, 7, 8)`:
 * for exponent i = 0..6 the values 10^(i−6) · midpoints of linspace(0.1, 1, k+1)
 * (k = 2^i signed, 2^(i+1) unsigned), negated copies when signed, plus 0 and 1; sorted.
 * Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", §2.2.
 */
export function dynamicMap(signed: boolean): Float32Array {
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const items = signed ? 2 ** i + 1 : 2 ** (i + 1) + 1;
    const scale = 10 ** (-6 + i);
    for (let j = 0; j < items - 1; j++) {
      const lo = 0.1 + (0.9 * j) / (items - 1), hi = 0.1 + (0.9 * (j + 1)) / (items - 1);
      const mean = (lo + hi) / 2;
      data.push(scale * mean);
      if (signed) data.push(-scale * mean);
    }
  }
  data.push(0, 1);
  if (data.length !== 256) throw new Error(`dynamic map has ${data.length} entries, expected 256`);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** Midpoints between consecutive codes (255 thresholds) for nearest-code search. */
export function codeThresholds(code: Float32Array): Float32Array {
  const t = new Float32Array(code.length - 1);
  for (let i = 0; i < t.length; i++) t[i] = (code[i] + code[i + 1]) / 2;
  return t;
}

/** Blockwise 8-bit quantized array living in host memory. */
export interface Quantized8 {
  /** One code index per element. */
  codes: Uint8Array; // [N]
  /** Absolute maximum of each block. */
  absmax: Float32Array; // [K]
}

/** Index of the nearest code to `x` (binary search over the 255 thresholds). */
function nearest(th: Float32Array, x: number): number {
  let lo = 0, hi = th.length; // answer in [0, 255]
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x > th[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A uniform number in [0, 1) from a 32-bit seed and an element index (a counter-based hash,
 * so a stream needs no state: the same seed and index always give the same number).
 */
export function hashUniform(seed: number, i: number): number {
  let h = Math.imul((seed ^ Math.imul(i, 0x9E3779B1)) >>> 0, 0x85EBCA6B);
  h ^= h >>> 13;
  h = Math.imul(h, 0xC2B2AE35);
  h ^= h >>> 16;
  h = Math.imul(h ^ (h >>> 15), 0x2C1B3C6D);
  h ^= h >>> 12;
  return (h >>> 0) / 4294967296;
}

/**
 * Quantizes `x` blockwise into `out` (normalised by each block's absmax), to the nearest code,
 * or, with `stochastic`, up or down at random with probabilities that make the expected
 * stored value equal to `x` (stochastic rounding: a change smaller than one code step still
 * moves the state on average instead of being rounded away every step). `stochastic.seed`
 * selects the stream (see {@linkcode hashUniform}). `code` is needed with `stochastic`.
 * With `rowLength`, blocks never straddle rows of that many elements (see {@linkcode blockCount}).
 *
 * @example
 * ```ts
 * import { codeThresholds, dequantize8, dynamicMap, quantize8 } from "./_dynamic_map.ts";
 * const code = dynamicMap(false), th = codeThresholds(code);
 * const x = new Float32Array(256).fill(0.5); x[0] = 1;       // 0.5 lies between two codes
 * const q = { codes: new Uint8Array(256), absmax: new Float32Array(1) };
 * const back = new Float32Array(256);
 * quantize8(x, th, 256, q, { code, seed: 3 });
 * dequantize8(q, code, 256, back);
 * const mean = back.slice(1).reduce((s, v) => s + v, 0) / 255;
 * if (Math.abs(mean - 0.5) > 0.01) throw new Error(`stochastic rounding is unbiased: ${mean}`);
 * ```
 */
export function quantize8(
  x: Float32Array,
  th: Float32Array,
  blocksize: number,
  out: Quantized8,
  stochastic?: { code: Float32Array; seed: number },
  rowLength?: number,
): void {
  const n = x.length;
  let k = 0;
  for (const [b, end] of blocks(n, blocksize, rowLength)) {
    let amax = 0;
    for (let i = b; i < end; i++) amax = Math.max(amax, Math.abs(x[i]));
    out.absmax[k++] = amax;
    const inv = amax > 0 ? 1 / amax : 0;
    if (!stochastic) {
      for (let i = b; i < end; i++) out.codes[i] = nearest(th, x[i] * inv);
      continue;
    }
    const { code, seed } = stochastic;
    for (let i = b; i < end; i++) {
      const y = x[i] * inv;
      let c = nearest(th, y);
      // The neighbour on the other side of y, and the probability of taking it.
      const o = y > code[c] ? c + 1 : y < code[c] ? c - 1 : c;
      if (o !== c && o >= 0 && o < code.length) {
        const p = (y - code[c]) / (code[o] - code[c]);
        if (hashUniform(seed, i) < p) c = o;
      }
      out.codes[i] = c;
    }
  }
}

/** Dequantizes `q` into `out` (length N), with the block layout it was quantized with. */
export function dequantize8(
  q: Quantized8,
  code: Float32Array,
  blocksize: number,
  out: Float32Array,
  rowLength?: number,
): void {
  if (rowLength === undefined || rowLength >= out.length) {
    for (let i = 0; i < out.length; i++) out[i] = code[q.codes[i]] * q.absmax[Math.floor(i / blocksize)];
    return;
  }
  let k = 0;
  for (const [b, end] of blocks(out.length, blocksize, rowLength)) {
    const a = q.absmax[k++];
    for (let i = b; i < end; i++) out[i] = code[q.codes[i]] * a;
  }
}

/**
 * Number of blocks of N elements: `ceil(N / blocksize)`, or with `rowLength` L (blocks never
 * straddle rows of L elements) `N / L · ceil(L / blocksize)`.
 *
 * @example
 * ```ts
 * import { blockCount } from "./_dynamic_map.ts";
 * if (blockCount(1000, 256) !== 4 || blockCount(1032, 256, 344) !== 6) throw new Error("3 rows of 2 blocks");
 * ```
 */
export function blockCount(n: number, blocksize: number, rowLength?: number): number {
  if (rowLength === undefined || rowLength >= n) return Math.ceil(n / blocksize);
  return (n / rowLength) * Math.ceil(rowLength / blocksize);
}

/**
 * `[start, end)` of each block: runs of `blocksize`, or with `rowLength` each row split into
 * `ceil(L / blocksize)` runs of nearly equal length (so one block's absmax serves one row only).
 */
function* blocks(n: number, blocksize: number, rowLength?: number): Generator<[number, number]> {
  if (rowLength === undefined || rowLength >= n) {
    for (let b = 0; b < n; b += blocksize) yield [b, Math.min(n, b + blocksize)];
    return;
  }
  if (n % rowLength !== 0) throw new RangeError(`8-bit blocks: ${n} elements are not rows of ${rowLength}`);
  const per = Math.ceil(rowLength / blocksize);
  for (let r = 0; r < n; r += rowLength) {
    for (let j = 0; j < per; j++) {
      yield [r + Math.floor((j * rowLength) / per), r + Math.floor(((j + 1) * rowLength) / per)];
    }
  }
}

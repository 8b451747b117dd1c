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

/** Quantizes `x` blockwise into `out` (normalised by each block's absmax). */
export function quantize8(x: Float32Array, th: Float32Array, blocksize: number, out: Quantized8): void {
  const n = x.length;
  for (let b = 0, k = 0; b < n; b += blocksize, k++) {
    const end = Math.min(n, b + blocksize);
    let amax = 0;
    for (let i = b; i < end; i++) amax = Math.max(amax, Math.abs(x[i]));
    out.absmax[k] = amax;
    const inv = amax > 0 ? 1 / amax : 0;
    for (let i = b; i < end; i++) out.codes[i] = nearest(th, x[i] * inv);
  }
}

/** Dequantizes `q` into `out` (length N). */
export function dequantize8(q: Quantized8, code: Float32Array, blocksize: number, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = code[q.codes[i]] * q.absmax[Math.floor(i / blocksize)];
}

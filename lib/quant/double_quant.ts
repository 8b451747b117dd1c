/**
 * Double ("nested") quantization of the 4-bit absmax, as bitsandbytes `quantize_4bit(...,
 * compress_statistics=True)` does (FORMATS.md §2.6): subtract `offset = mean(absmax)`, then quantize
 * blockwise (blocks of 256) to 8 bits with the signed dynamic map, one float32 scale per block.
 *
 * Legend: `NB` number of 4-bit blocks (absmax values), `NN = ceil(NB / 256)` nested blocks.
 * @module
 */

import { createDynamicMap } from "./codebooks.ts";
import { describe, f32 } from "./_options.ts";

/** Blocksize of the second-level quantization; bitsandbytes always uses 256. */
export const NESTED_BLOCKSIZE = 256;

/** The stored form of a double-quantized absmax. */
export interface DoubleQuantState {
  /** 8-bit indexes into `codebook`, `[NB]` (the checkpoint's `weight.absmax`, U8). */
  codes: Uint8Array;
  /** Per-256-block float32 scales, `[NN]` (`weight.nested_absmax`). */
  scales: Float32Array;
  /** The float32 mean subtracted before quantizing (`nested_offset`). */
  offset: number;
  /** Always 256 (`nested_blocksize`). */
  blocksize: number;
  /** The 256-entry map indexed by `codes` (`weight.nested_quant_map`). */
  codebook: Float32Array;
}

/**
 * `dQuantize<0>` of csrc/kernels.cu: a 7-step binary search over the 256-entry map, then a float32
 * midpoint comparison against one neighbour. Ties go down in the upper branch and up in the lower one,
 * as in CUDA; NaN gives index 0.
 */
function dQuantize(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upperPivot === 255) upper = code[upperPivot];
  if (lowerPivot === 0) lower = code[lowerPivot];
  if (x > val) return x > f32(f32(upper + val) * 0.5) ? upperPivot : pivot;
  return x < f32(f32(lower + val) * 0.5) ? lowerPivot : pivot;
}

/**
 * Blockwise 8-bit quantization with a 256-entry code (bitsandbytes `quantize_blockwise`, CUDA
 * `General8bit` path): per block `s = max|v|`, each value's index is `dQuantize(code, v * f32(1 / s))`.
 *
 * @param values `[M]` float32 values.
 * @param code the 256-entry ascending map, e.g. {@linkcode createDynamicMap}.
 * @param blocksize values per scale.
 * @returns `codes` `[M]` and `scales` `[ceil(M / blocksize)]`.
 * @example
 * ```ts
 * import { quantizeBlockwise8bit } from "./double_quant.ts";
 * import { createDynamicMap } from "./codebooks.ts";
 * const { codes, scales } = quantizeBlockwise8bit(new Float32Array([0.5, -1, 0]), createDynamicMap(), 256);
 * if (scales[0] !== 1 || codes[2] !== 127 || codes[1] !== 0) throw new Error(`${codes}`);
 * ```
 */
export function quantizeBlockwise8bit(
  values: Float32Array,
  code: Float32Array,
  blocksize: number,
): { codes: Uint8Array; scales: Float32Array } {
  if (!(code instanceof Float32Array) || code.length !== 256) {
    throw new TypeError(
      `quantizeBlockwise8bit: code must be a Float32Array of 256 values, received ${describe(code)}.`,
    );
  }
  if (!Number.isSafeInteger(blocksize) || blocksize <= 0) {
    throw new RangeError(
      `quantizeBlockwise8bit: blocksize must be a positive integer, received ${describe(blocksize)}.`,
    );
  }
  const n = values.length;
  const scales = new Float32Array(Math.ceil(n / blocksize));
  const codes = new Uint8Array(n);
  for (let b = 0; b < scales.length; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, n);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(values[i]));
    scales[b] = m;
    const inv = f32(1 / m); // an all-zero block gives NaN and index 0, whose value times 0 is 0 again
    for (let i = start; i < end; i++) codes[i] = dQuantize(code, f32(values[i] * inv));
  }
  return { codes, scales };
}

/**
 * Double-quantizes a 4-bit absmax: `offset = f32(mean(absmax))` (summed in float64, rounded once),
 * then {@linkcode quantizeBlockwise8bit} of `f32(absmax - offset)` with the dynamic map and blocksize 256.
 *
 * @param absmax `[NB]` non-negative float32 block scales.
 * @returns the nested state (`codes` `[NB]`, `scales` `[NN]`).
 * @example
 * ```ts
 * import { doubleDequantize, doubleQuantize } from "./double_quant.ts";
 * const absmax = Float32Array.from({ length: 300 }, (_, i) => 1 + i / 300);
 * const dq = doubleQuantize(absmax);
 * if (dq.codes.length !== 300 || dq.scales.length !== 2 || dq.blocksize !== 256) throw new Error("layout");
 * const back = doubleDequantize(dq);
 * if (Math.abs(back[299] - absmax[299]) > 0.01) throw new Error("round trip");
 * ```
 */
export function doubleQuantize(absmax: Float32Array): DoubleQuantState {
  if (!(absmax instanceof Float32Array) || absmax.length === 0) {
    throw new TypeError(
      `doubleQuantize: absmax must be a non-empty Float32Array, received ${describe(absmax)}.`,
    );
  }
  let sum = 0;
  for (const a of absmax) sum += a;
  const offset = f32(sum / absmax.length);
  const centered = absmax.map((a) => a - offset); // Float32Array.map rounds each difference to float32
  const codebook = createDynamicMap();
  const { codes, scales } = quantizeBlockwise8bit(centered, codebook, NESTED_BLOCKSIZE);
  return { codes, scales, offset, blocksize: NESTED_BLOCKSIZE, codebook };
}

/**
 * Reconstructs the float32 absmax from its nested form exactly as bitsandbytes does:
 * `absmax[b] = f32(f32(codebook[codes[b]] * scales[b / 256]) + offset)`.
 *
 * @param state the nested state (from {@linkcode doubleQuantize} or a checkpoint).
 * @returns `[NB]` float32 block scales.
 * @example
 * ```ts
 * import { doubleDequantize } from "./double_quant.ts";
 * import { createDynamicMap } from "./codebooks.ts";
 * const codebook = createDynamicMap();
 * const out = doubleDequantize({ codes: new Uint8Array([255, 127]), scales: new Float32Array([0.5]), offset: 2, blocksize: 256, codebook });
 * if (out[0] !== 2.5 || out[1] !== 2) throw new Error(`${out}`);
 * ```
 */
export function doubleDequantize(state: DoubleQuantState): Float32Array {
  const { codes, scales, offset, blocksize, codebook } = state;
  if (!(codebook instanceof Float32Array) || codebook.length !== 256) {
    throw new TypeError(
      `doubleDequantize: codebook must be a Float32Array of 256 values, received ${describe(codebook)}.`,
    );
  }
  if (!Number.isSafeInteger(blocksize) || blocksize <= 0) {
    throw new RangeError(
      `doubleDequantize: blocksize must be a positive integer, received ${describe(blocksize)}.`,
    );
  }
  if (!(scales instanceof Float32Array) || scales.length !== Math.ceil(codes.length / blocksize)) {
    throw new TypeError(
      `doubleDequantize: scales must be a Float32Array of ${
        Math.ceil(codes.length / blocksize)
      } values for ${codes.length} codes, received ${describe(scales)}.`,
    );
  }
  if (!Number.isFinite(offset)) {
    throw new RangeError(`doubleDequantize: offset must be a finite number, received ${describe(offset)}.`);
  }
  const off = f32(offset);
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    out[i] = f32(codebook[codes[i]] * scales[Math.floor(i / blocksize)]) + off;
  }
  return out;
}

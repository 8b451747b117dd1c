/**
 * Storage cost of bitsandbytes-style 4-bit weights (FORMATS.md §2): 4 bits per code plus
 * the blockwise scale constants.
 *
 * - Without double quantization each block of `blocksize` codes keeps one fp32 absmax:
 *   32 / blocksize bits per parameter (0.5 at blocksize 64).
 * - With double quantization (QLoRA §2, FORMATS.md §2.6) the absmax values become u8
 *   codes, and every 256 of them share one fp32 scale: 8 / blocksize + 32 / (blocksize · 256)
 *   bits per parameter (0.127 at blocksize 64, so 4.127 bits in all).
 *
 * NF4 and FP4 cost the same; the per-tensor code tables (16 + 256 fp32) and the JSON
 * quant state are counted by {@linkcode quantTensorBytes} but not in the per-parameter rate.
 * The byte counts come from the quantized-format registry (`lib/quant/formats.ts`).
 * @module
 */
import { QUANT_FORMATS } from "../quant/formats.ts";

/** 4-bit code family. */
export type QuantType = "nf4" | "fp4";

/** Blocksizes bitsandbytes accepts for 4-bit weights (FORMATS.md §2.2). */
export const QUANT_BLOCKSIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/** The second-level (nested) blocksize, fixed at 256 by bitsandbytes. */
export const NESTED_BLOCKSIZE = 256;

function checkBlocksize(blocksize: number): void {
  if (!QUANT_BLOCKSIZES.includes(blocksize)) {
    throw new RangeError(`blocksize must be one of ${QUANT_BLOCKSIZES.join(", ")}, received ${blocksize}`);
  }
}

/**
 * Bits spent on scale constants per parameter.
 *
 * @param doubleQuant whether the absmax values are quantized again
 * @param blocksize first-level blocksize
 * @returns bits per parameter (0.5 or 0.126953125 at blocksize 64)
 * @example
 * ```ts
 * import { quantConstantBits } from "./quant_bits.ts";
 * if (quantConstantBits(false, 64) !== 0.5) throw new Error("no double quant");
 * if (quantConstantBits(true, 64) !== 8 / 64 + 32 / (64 * 256)) throw new Error("double quant");
 * ```
 */
export function quantConstantBits(doubleQuant: boolean, blocksize: number): number {
  checkBlocksize(blocksize);
  return doubleQuant ? 8 / blocksize + 32 / (blocksize * NESTED_BLOCKSIZE) : 32 / blocksize;
}

/**
 * Total bits per parameter of a 4-bit quantized weight (codes + constants).
 *
 * @param doubleQuant whether the absmax values are quantized again
 * @param blocksize first-level blocksize
 * @returns bits per parameter
 * @example
 * ```ts
 * import { quantBitsPerParam } from "./quant_bits.ts";
 * if (quantBitsPerParam(true, 64).toFixed(3) !== "4.127") throw new Error("QLoRA's 4.127 bits");
 * ```
 */
export function quantBitsPerParam(doubleQuant: boolean, blocksize: number): number {
  return 4 + quantConstantBits(doubleQuant, blocksize);
}

/** Bytes of one quantized tensor, split into packed codes and constants. */
export interface QuantTensorBytes {
  /** Packed 4-bit codes, two per byte. */
  codes: number;
  /** absmax (u8 or fp32), nested absmax, both code tables and the nested offset. */
  constants: number;
}

/**
 * Exact bytes of one 4-bit tensor of `n` elements as bitsandbytes stores it.
 *
 * @param n number of elements
 * @param doubleQuant whether the absmax values are quantized again
 * @param blocksize first-level blocksize
 * @returns codes and constants in bytes
 * @example
 * ```ts
 * import { quantTensorBytes } from "./quant_bits.ts";
 * const b = quantTensorBytes(4096 * 4096, true, 64);
 * // 262144 blocks → 262144 u8 absmax + 1024 fp32 nested absmax + 16·4 + 256·4 + 4
 * if (b.codes !== 8388608 || b.constants !== 262144 + 4096 + 64 + 1024 + 4) throw new Error(JSON.stringify(b));
 * ```
 */
export function quantTensorBytes(n: number, doubleQuant: boolean, blocksize: number): QuantTensorBytes {
  checkBlocksize(blocksize);
  // bitsandbytes sizes depend on the element count only, so n elements = one [n, 1] matrix
  return QUANT_FORMATS.nf4.matrixBytes(n, 1, { doubleQuant, blocksize });
}

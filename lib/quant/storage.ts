/**
 * Storage cost of 4-bit quantized weights, in bits per parameter: 4 for the codes plus the per-block
 * constants (QLoRA paper §2: 32/64 = 0.5 bits without, 8/64 + 32/(64·256) ≈ 0.127 with double
 * quantization). Per-tensor constants (the 16- and 256-entry maps, the JSON state) are not counted.
 * @module
 */

import type { Quant4bitState } from "./blockwise_4bit.ts";
import { NESTED_BLOCKSIZE } from "./double_quant.ts";
import { defineOptions, type FieldsOf } from "../options/schema.ts";
import {
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "./quantize_option.ts";

/**
 * Bits per parameter actually used by a quantized state: the packed codes plus the stored block
 * constants (float32 absmax, or 8-bit codes plus float32 nested scales), divided by `numel`.
 *
 * @param state a state from `quantize4bit` or the bnb parser.
 * @returns bits per parameter (e.g. 4.5 for NF4, blocksize 64, no double quantization).
 * @example
 * ```ts
 * import { bitsPerParam } from "./storage.ts";
 * import { quantize4bit } from "./blockwise_4bit.ts";
 * const w = new Float32Array(64 * 256).fill(0.5);
 * if (bitsPerParam(quantize4bit(w, { quantize: { doubleQuant: false } })) !== 4.5) throw new Error("plain");
 * if (bitsPerParam(quantize4bit(w)) !== 4 + 8 / 64 + 32 / (64 * 256)) throw new Error("dq (the default)");
 * ```
 */
export function bitsPerParam(state: Quant4bitState): number {
  const packedBits = 8 * state.packed.length;
  const constantBits = state.nested === undefined
    ? 32 * state.absmax.length
    : 8 * state.nested.codes.length + 32 * state.nested.scales.length;
  return (packedBits + constantBits) / state.numel;
}

/** Options of {@linkcode estimateBitsPerParam}. */
export interface EstimateBitsOptions {
  /** The 4-bit format (`loadModel`'s option): blocksize and double quantization matter. @default "nf4" */
  quantize?: QuantizeOption;
}

/** The schema of {@linkcode estimateBitsPerParam}'s options. */
export const estimateBitsSchema = defineOptions(
  "estimateBitsPerParam",
  {
    quantize: quantizeField('The 4-bit format: "nf4", "fp4" or { type, doubleQuant, blocksize }.'),
  } satisfies FieldsOf<EstimateBitsOptions>,
  { renamed: QUANTIZE_RENAMED },
);

/**
 * Asymptotic bits per parameter for a large tensor, for memory planning before quantizing:
 * `4 + 32 / G`, or `4 + 8 / G + 32 / (256 G)` with double quantization.
 *
 * @param options blocksize and double quantization.
 * @returns bits per parameter.
 * @example
 * ```ts
 * import { estimateBitsPerParam } from "./storage.ts";
 * if (estimateBitsPerParam({ quantize: { doubleQuant: false } }) !== 4.5) throw new Error("plain");
 * const dq = estimateBitsPerParam();
 * if (Math.abs(dq - 4.127) > 0.001) throw new Error(String(dq));
 * ```
 */
export function estimateBitsPerParam(options: EstimateBitsOptions = {}): number {
  const q = estimateBitsSchema.parse(options).quantize as ResolvedQuantize;
  const g = q.blocksize;
  return q.doubleQuant ? 4 + 8 / g + 32 / (NESTED_BLOCKSIZE * g) : 4 + 32 / g;
}

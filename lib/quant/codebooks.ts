/**
 * Code tables of bitsandbytes blockwise quantization, bit-exact in float32.
 *
 * - NF4 and FP4: the 16-entry 4-bit tables of `functional.get_4bit_type`, indexed by the 4-bit code
 *   (FORMATS.md §2.4). A checkpoint stores them as `weight.quant_map`.
 * - The signed 8-bit dynamic map of `functional.create_dynamic_map(signed=True)`, used by double
 *   quantization of the absmax (FORMATS.md §2.6). A checkpoint stores it as `weight.nested_quant_map`.
 *
 * Every function returns a fresh copy, so callers may mutate the result.
 * @module
 */

import { f32 } from "./_options.ts";

/** The two 4-bit data types of bitsandbytes. */
export type QuantType4bit = "nf4" | "fp4";

/** The 4-bit quantization types accepted by {@linkcode code4bit} and the quantizers. */
export const QUANT_TYPES_4BIT: readonly QuantType4bit[] = ["nf4", "fp4"];

// NF4: normal-distribution quantiles, sorted, max |v| = 1 (bitsandbytes `get_4bit_type("nf4")`,
// identical to `nf4_dequantization_lut` in csrc/kernels.cu).
const NF4 = Float32Array.from([
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
]);

// FP4 (E2M1): raw values in bit-pattern order divided by max |v| = 12 in float32
// (`get_4bit_type("fp4")`: `data.div_(data.abs().max())`). Python's `-0` is the int 0, so code 8 is +0.
// A float64 quotient rounded once to float32 equals the float32 quotient (53 >= 2*24 + 2).
const FP4_RAW = [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3];
const FP4 = Float32Array.from(FP4_RAW, (v) => f32(v / 12));

/**
 * The 16 float32 values of a 4-bit code table, indexed by code (bitsandbytes `get_4bit_type`).
 *
 * @param quantType `"nf4"` (sorted ascending) or `"fp4"` (bit-pattern order, bit 3 = sign).
 * @returns a new `Float32Array` of length 16: the `quant_map` tensor of a checkpoint.
 * @example
 * ```ts
 * import { code4bit } from "./codebooks.ts";
 * const nf4 = code4bit("nf4");
 * if (nf4.length !== 16 || nf4[0] !== -1 || nf4[7] !== 0 || nf4[15] !== 1) throw new Error("nf4");
 * const fp4 = code4bit("fp4");
 * if (fp4[3] !== 1 || fp4[2] !== Math.fround(8 / 12) || fp4[11] !== -1) throw new Error("fp4");
 * ```
 */
export function code4bit(quantType: QuantType4bit): Float32Array {
  switch (quantType) {
    case "nf4":
      return NF4.slice();
    case "fp4":
      return FP4.slice();
    default: {
      const never: never = quantType;
      throw new RangeError(`code4bit: quantType must be "nf4" or "fp4", received ${JSON.stringify(never)}.`);
    }
  }
}

// 10 ** (i - 6) as Python computes it (correctly rounded literals; JS `10 ** -6` may differ in the last bit).
const DECADES = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];

/**
 * `torch.linspace(start, end, steps, dtype=float32)` as the scalar CPU kernel computes it: the first
 * half counts up from `start`, the second half down from `end`, all in float32.
 */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) {
    out[i] = i < half ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/**
 * The signed 8-bit dynamic quantization map of bitsandbytes
 * (`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`), used to double-quantize
 * the 4-bit absmax. 256 ascending float32 values in [-0.99296875, 1]; `map[127] === 0`, `map[255] === 1`.
 *
 * Computed in float32 like the torch CPU reference (FORMATS.md §2.6). A loader should prefer the
 * `nested_quant_map` stored in the checkpoint; this table is for writing.
 *
 * @returns a new `Float32Array` of length 256.
 * @example
 * ```ts
 * import { createDynamicMap } from "./codebooks.ts";
 * const map = createDynamicMap();
 * if (map.length !== 256 || map[127] !== 0 || map[255] !== 1) throw new Error("ends");
 * if (map[0] !== Math.fround(-0.99296875) || map[254] !== Math.fround(0.99296875)) throw new Error("tails");
 * ```
 */
export function createDynamicMap(): Float32Array {
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const bounds = linspaceF32(0.1, 1, 2 ** i + 1);
    const scale = f32(DECADES[i]);
    for (const sign of [1, -1]) {
      for (let j = 0; j + 1 < bounds.length; j++) {
        const mean = f32(f32(bounds[j] + bounds[j + 1]) / 2);
        data.push(f32(sign * scale * mean));
      }
    }
  }
  data.push(0, 1);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}

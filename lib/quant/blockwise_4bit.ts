/**
 * Blockwise 4-bit (NF4 / FP4) quantization, bit-exact with the bitsandbytes CUDA kernel
 * `kQuantizeBlockwise` and its dequantizer (FORMATS.md §2.3–2.7). Pure TypeScript over typed arrays,
 * so it runs while a checkpoint streams in.
 *
 * Legend: `N` numel of the flattened weight, `G` blocksize, `NB = ceil(N / G)` blocks.
 *
 * Packing: byte `j` of `packed` holds element `2j` in its **high** nibble and `2j + 1` in its low
 * nibble. For odd `N` the last low nibble is the code of a padding 0.0 (CUDA loads out-of-range
 * elements as 0), i.e. 7 for NF4 and 0 for FP4.
 * @module
 */

import { code4bit, type QuantType4bit } from "./codebooks.ts";
import { doubleDequantize, doubleQuantize, type DoubleQuantState } from "./double_quant.ts";
import { describe, f32, shapeSize } from "./_options.ts";
import { nativeKernels } from "../engine/native.ts";
import { array, defineOptions, type FieldsOf, integer, oneOf } from "../options/schema.ts";
import {
  BLOCKSIZES_4BIT,
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "./quantize_option.ts";

export { BLOCKSIZES_4BIT };

/** Original weight dtype recorded in the quant state (`str(dtype).strip("torch.")`). */
export type WeightDtype = "float32" | "bfloat16" | "float16";

/** The weight dtypes accepted in a quant state. */
export const WEIGHT_DTYPES: readonly WeightDtype[] = ["float32", "bfloat16", "float16"];

/** Options of {@linkcode quantize4bit}. */
export interface Quantize4bitOptions {
  /**
   * The 4-bit format: `"nf4"`, `"fp4"` or `{ type, doubleQuant, blocksize }` (the same option as
   * `loadModel`'s). Double quantization is bitsandbytes' `compress_statistics`.
   * @default {"nf4"} (the QLoRA choice: double quantization on, blocksize 64)
   */
  quantize?: QuantizeOption;
  /** Shape of the original weight, e.g. `[out, in]`; its product must equal `values.length`. @default [values.length] */
  shape?: readonly number[];
  /** Dtype of the original weight, recorded for the writer. @default "float32" */
  dtype?: WeightDtype;
}

/** A 4-bit quantized tensor: everything `dequantize4bit` and the bnb writer need. */
export interface Quant4bitState {
  /** 4-bit data type. */
  quantType: QuantType4bit;
  /** Elements per absmax block (`G`). */
  blocksize: number;
  /** Original weight shape, e.g. `[out, in]`. */
  shape: number[];
  /** Number of elements `N` (product of `shape`). */
  numel: number;
  /** Original weight dtype. */
  dtype: WeightDtype;
  /** Packed codes, `[ceil(N / 2)]`, high nibble first. */
  packed: Uint8Array;
  /** The 16-entry code table used (`quant_map`). */
  quantMap: Float32Array;
  /**
   * Per-block scales used by dequantization, `[NB]`. With double quantization these are the values
   * reconstructed from `nested` (exactly what bitsandbytes computes when loading), not the originals.
   */
  absmax: Float32Array;
  /** The stored form of `absmax` when double-quantized. */
  nested?: DoubleQuantState;
}

/** The schema of {@linkcode quantize4bit}'s options. */
export const quantize4bitSchema = defineOptions(
  "quantize4bit",
  {
    quantize: quantizeField('The 4-bit format: "nf4", "fp4" or { type, doubleQuant, blocksize }.'),
    shape: array(
      "Shape of the original weight (its product must equal values.length).",
      integer("A dimension.", {
        min: 0,
      }),
    ),
    dtype: oneOf("Dtype of the original weight, recorded for the writer.", WEIGHT_DTYPES, {
      default: "float32",
    }),
  } satisfies FieldsOf<Quantize4bitOptions>,
  { renamed: QUANTIZE_RENAMED },
);

/** Checks a 4-bit blocksize, throwing a RangeError that lists the valid ones. */
export function checkBlocksize4bit(blocksize: unknown, fn: string): number {
  if (typeof blocksize !== "number" || !BLOCKSIZES_4BIT.includes(blocksize)) {
    throw new RangeError(
      `${fn}: blocksize must be one of ${BLOCKSIZES_4BIT.join(", ")}, received ${describe(blocksize)}.`,
    );
  }
  return blocksize;
}

function resolveQuantize4bitOptions(
  n: number,
  options: Quantize4bitOptions = {},
): ResolvedQuantize & { shape: number[]; dtype: WeightDtype } {
  const fn = "quantize4bit";
  const o = quantize4bitSchema.parse(options);
  const q = o.quantize as ResolvedQuantize;
  const shape = [...(o.shape ?? [n])];
  if (shapeSize(shape, fn) !== n) {
    throw new TypeError(
      `${fn}: shape [${shape.join(", ")}] does not hold ${n} values; pass the weight's shape.`,
    );
  }
  return { ...q, shape, dtype: o.dtype };
}

// Decision thresholds of `dQuantizeNF4` (csrc/kernels.cu) as float32: the midpoints of the NF4 table.
const NF4_THRESHOLDS = Float32Array.from([
  -0.8480964004993439,
  -0.6106329262256622,
  -0.4599952697753906,
  -0.33967943489551544,
  -0.23460740596055984,
  -0.13791173323988914,
  -0.045525018125772476,
  0.03979014977812767,
  0.1202552504837513,
  0.2035212516784668,
  0.2920137718319893,
  0.3893125355243683,
  0.5016634166240692,
  0.6427869200706482,
  0.8614784181118011,
]);

/** `dQuantizeNF4`: the number of thresholds `x` is strictly above (ties go low; NaN gives 0). */
function nf4Code(x: number): number {
  let c = 0;
  while (c < 15 && x > NF4_THRESHOLDS[c]) c++;
  return c;
}

// `dQuantizeFP4` thresholds, float32 literals of the CUDA source (0.583333f is not the exact midpoint).
const FP4_T = [0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333, 0.00260417].map(f32);

/** `dQuantizeFP4`: sign bit 8 for x < 0 (so -0 gives code 0), then a decision tree on |x|. */
function fp4Code(x: number): number {
  const sign = x < 0 ? 8 : 0;
  const a = Math.abs(x);
  if (a > FP4_T[0]) {
    if (a > FP4_T[1]) return (a > FP4_T[2] ? 3 : 2) + sign;
    return (a > FP4_T[3] ? 5 : 4) + sign;
  }
  if (a > FP4_T[4]) return (a > FP4_T[5] ? 7 : 6) + sign;
  return (a > FP4_T[6] ? 1 : 0) + sign;
}

/**
 * The 4-bit code bitsandbytes picks for a value already scaled by `1 / absmax`.
 *
 * @param x scaled value, normally in [-1, 1]; NaN (from an all-zero block) gives code 0.
 * @param quantType `"nf4"` or `"fp4"`.
 * @returns the code, 0..15.
 * @example
 * ```ts
 * import { nearestCode4bit } from "./blockwise_4bit.ts";
 * if (nearestCode4bit(0, "nf4") !== 7 || nearestCode4bit(1, "nf4") !== 15) throw new Error("nf4");
 * // exactly on the midpoint between codes 7 and 8: ties go to the lower code
 * if (nearestCode4bit(Math.fround(0.03979014977812767), "nf4") !== 7) throw new Error("tie");
 * if (nearestCode4bit(-0.5, "fp4") !== 0b1101 || nearestCode4bit(-0, "fp4") !== 0) throw new Error("fp4");
 * ```
 */
export function nearestCode4bit(x: number, quantType: QuantType4bit): number {
  switch (quantType) {
    case "nf4":
      return nf4Code(x);
    case "fp4":
      return fp4Code(x);
    default: {
      const never: never = quantType;
      throw new RangeError(`nearestCode4bit: quantType must be "nf4" or "fp4", received ${describe(never)}.`);
    }
  }
}

/**
 * Quantizes a flattened weight to 4 bits per value with one float32 absmax per block, exactly as
 * bitsandbytes `quantize_4bit` does on CUDA: `absmax = max|x|`, `x' = x * f32(1 / absmax)` in float32,
 * then the NF4 / FP4 decision tree. A final partial block gets its own absmax. An all-zero block has
 * absmax 0 and dequantizes to zeros (never NaN).
 *
 * @param values the weight, row-major flattened, `[N]`; all values must be finite.
 * @param options quantization type, blocksize, original shape and dtype, double quantization.
 * @returns the quantized state (`packed` `[ceil(N / 2)]`, `absmax` `[NB]`).
 * @example
 * ```ts
 * import { dequantize4bit, quantize4bit } from "./blockwise_4bit.ts";
 * const w = Float32Array.from({ length: 64 }, (_, i) => (i - 32) / 32);
 * const q = quantize4bit(w, { quantize: { type: "nf4", blocksize: 64 }, shape: [2, 32] });
 * if (q.packed.length !== 32 || q.absmax.length !== 1 || q.absmax[0] !== 1) throw new Error("layout");
 * if (q.packed[0] >> 4 !== 0) throw new Error("element 0 (-1.0) goes in the high nibble as code 0");
 * const back = dequantize4bit(q);
 * if (back[0] !== -1 || Math.abs(back[40] - w[40]) > 0.1) throw new Error("round trip");
 * ```
 */
export function quantize4bit(values: Float32Array, options?: Quantize4bitOptions): Quant4bitState {
  if (!(values instanceof Float32Array)) {
    throw new TypeError(`quantize4bit: values must be a Float32Array, received ${describe(values)}.`);
  }
  const { type: quantType, blocksize, shape, dtype, doubleQuant } = resolveQuantize4bitOptions(
    values.length,
    options,
  );
  const n = values.length;
  const nBlocks = Math.ceil(n / blocksize);
  const absmax = new Float32Array(nBlocks);
  const packed = new Uint8Array(Math.ceil(n / 2));
  const code = quantType === "nf4" ? nf4Code : fp4Code;
  for (let b = 0; b < nBlocks; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, n);
    let m = 0;
    for (let i = start; i < end; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) {
        throw new RangeError(`quantize4bit: values[${i}] is ${v}; 4-bit quantization needs finite weights.`);
      }
      const a = Math.abs(v);
      if (a > m) m = a;
    }
    absmax[b] = m;
    const inv = f32(1 / m); // Infinity for an all-zero block: 0 * Infinity = NaN, which both trees map to 0
    for (let i = start; i < end; i++) {
      const q = code(f32(values[i] * inv));
      packed[i >> 1] |= (i & 1) === 0 ? q << 4 : q;
    }
    // Odd N: the last block's padding element is a 0.0 quantized with the same scale (CUDA loads 0).
    if (end === n && (n & 1) === 1) packed[n >> 1] |= code(f32(0 * inv));
  }
  const state: Quant4bitState = {
    quantType,
    blocksize,
    shape,
    numel: n,
    dtype,
    packed,
    quantMap: code4bit(quantType),
    absmax,
  };
  if (doubleQuant) {
    state.nested = doubleQuantize(absmax);
    state.absmax = doubleDequantize(state.nested);
  }
  return state;
}

/**
 * Checks a state's internal consistency; throws a TypeError naming the first inconsistent field.
 * Used by {@linkcode dequantize4bit} and the bnb parser.
 */
export function checkQuant4bitState(state: Quant4bitState, fn: string): void {
  checkBlocksize4bit(state.blocksize, fn);
  const n = shapeSize(state.shape, fn);
  if (n !== state.numel) {
    throw new TypeError(`${fn}: numel ${state.numel} does not match shape [${state.shape.join(", ")}].`);
  }
  if (!(state.packed instanceof Uint8Array) || state.packed.length !== Math.ceil(n / 2)) {
    throw new TypeError(
      `${fn}: packed must be a Uint8Array of ${Math.ceil(n / 2)} bytes for ${n} values, received ${
        describe(state.packed)
      }.`,
    );
  }
  if (!(state.quantMap instanceof Float32Array) || state.quantMap.length !== 16) {
    throw new TypeError(
      `${fn}: quantMap must be a Float32Array of 16 values, received ${describe(state.quantMap)}.`,
    );
  }
  const nBlocks = Math.ceil(n / state.blocksize);
  if (!(state.absmax instanceof Float32Array) || state.absmax.length !== nBlocks) {
    throw new TypeError(
      `${fn}: absmax must be a Float32Array of ${nBlocks} blocks (${n} values / blocksize ${state.blocksize}), received ${
        describe(state.absmax)
      }.`,
    );
  }
}

/**
 * Dequantizes a 4-bit state to float32: `w[i] = quantMap[code_i] * absmax[i / G]`, rounded once to
 * float32 (bitsandbytes computes in float32, then casts to the original dtype).
 *
 * @param state a state from {@linkcode quantize4bit} or the bnb parser.
 * @returns the row-major weight, `[N]` (reshape with `state.shape`).
 * @example
 * ```ts
 * import { dequantize4bit, quantize4bit } from "./blockwise_4bit.ts";
 * const q = quantize4bit(new Float32Array([0, 0, 2, -1, 0.5]), { quantize: { type: "fp4", blocksize: 32 } });
 * const w = dequantize4bit(q);
 * if (w.length !== 5 || w[2] !== 2 || w[3] !== -1 || w[4] !== 0.5) throw new Error(String(w));
 * ```
 */
export function dequantize4bit(state: Quant4bitState): Float32Array {
  checkQuant4bitState(state, "dequantize4bit");
  const out = new Float32Array(state.numel);
  nativeKernels().dequant4bit(state.packed, state.absmax, state.quantMap, out, state.blocksize);
  return out;
}

/**
 * {@linkcode dequantize4bit} into a given buffer of `numel` floats (e.g. a view of the wasm heap),
 * with the native kernel when it is built (multi-threaded), else the TypeScript one.
 *
 * @param state a 4-bit state.
 * @param out destination, exactly `state.numel` floats.
 * @example
 * ```ts
 * import { dequantize4bit, dequantize4bitInto, quantize4bit } from "./blockwise_4bit.ts";
 * const q = quantize4bit(Float32Array.from({ length: 130 }, (_, i) => Math.sin(i)), { quantize: "nf4" });
 * const out = new Float32Array(130);
 * dequantize4bitInto(q, out);
 * if (out.join() !== dequantize4bit(q).join()) throw new Error("mismatch");
 * ```
 */
export function dequantize4bitInto(state: Quant4bitState, out: Float32Array): void {
  checkQuant4bitState(state, "dequantize4bitInto");
  if (!(out instanceof Float32Array) || out.length !== state.numel) {
    throw new TypeError(
      `dequantize4bitInto: out must be a Float32Array of ${state.numel} values, received ${describe(out)}.`,
    );
  }
  nativeKernels().dequant4bit(state.packed, state.absmax, state.quantMap, out, state.blocksize);
}

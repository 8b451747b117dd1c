/**
 * The safetensors dtype table and conversions between raw little-endian bytes and
 * typed arrays: f16 ↔ f32, bf16 ↔ f32 (round-to-nearest-even when narrowing), fp8 → f32,
 * integers → f32. Pure typed-array code (no tfjs), so it can run on streamed tensors.
 *
 * Sources: huggingface/safetensors `safetensors/src/tensor.rs` (dtype enum, bit sizes),
 * IEEE 754-2008 binary16, the OCP FP8 spec (E4M3 "fn": no infinities, NaN = S.1111.111).
 * @module
 */

/** Dtype strings of the safetensors header that this toolkit reads and writes. */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** The typed array that holds a tensor of each dtype (F16/BF16 as raw `Uint16Array` bits, FP8 as bytes). */
export type TensorTypedArray =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

const ITEMSIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/**
 * Every dtype this module knows, widest first.
 *
 * @example
 * ```ts
 * import { DTYPES } from "./dtypes.ts";
 * if (!DTYPES.includes("BF16")) throw new Error("BF16 missing");
 * ```
 */
export const DTYPES: readonly SafetensorsDtype[] = Object.freeze(Object.keys(ITEMSIZE) as SafetensorsDtype[]);

// Typed arrays use the platform byte order; safetensors is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("nbtune's safetensors I/O needs a little-endian platform; this one is big-endian");
}

/**
 * True when `value` is a dtype string of {@linkcode DTYPES}.
 *
 * @example
 * ```ts
 * import { isDtype } from "./dtypes.ts";
 * if (!isDtype("F16") || isDtype("f16") || isDtype(3)) throw new Error("wrong");
 * ```
 */
export function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === "string" && Object.hasOwn(ITEMSIZE, value);
}

/**
 * Checks a dtype string. Throws a `RangeError` naming the value and listing the known
 * dtypes when it is not one of {@linkcode DTYPES}.
 *
 * @example
 * ```ts
 * import { parseDtype } from "./dtypes.ts";
 * if (parseDtype("BF16") !== "BF16") throw new Error("wrong");
 * let message = "";
 * try { parseDtype("Q4_0"); } catch (e) { message = (e as Error).message; }
 * if (!message.includes('"Q4_0"') || !message.includes("F32")) throw new Error(message);
 * ```
 */
export function parseDtype(value: unknown): SafetensorsDtype {
  if (isDtype(value)) return value;
  throw new RangeError(
    `Unknown safetensors dtype ${JSON.stringify(value) ?? String(value)}; expected one of ${
      DTYPES.join(", ")
    }`,
  );
}

/**
 * Bytes per element of a dtype.
 *
 * @example
 * ```ts
 * import { dtypeItemsize } from "./dtypes.ts";
 * if (dtypeItemsize("BF16") !== 2 || dtypeItemsize("I64") !== 8) throw new Error("wrong");
 * ```
 */
export function dtypeItemsize(dtype: SafetensorsDtype): number {
  return ITEMSIZE[parseDtype(dtype)];
}

/**
 * Number of elements of a shape (1 for a scalar `[]`). Throws a `RangeError` for a
 * dimension that is not a non-negative safe integer or a product beyond 2^53.
 *
 * @example
 * ```ts
 * import { shapeSize } from "./dtypes.ts";
 * if (shapeSize([3, 4]) !== 12 || shapeSize([]) !== 1 || shapeSize([5, 0]) !== 0) throw new Error("wrong");
 * ```
 */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(`Shape [${shape.join(", ")}] has dimension ${d}; use non-negative integers`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`Shape [${shape.join(", ")}] has more than 2^53 elements`);
  }
  return n;
}

/**
 * Byte length of a tensor: `product(shape) · itemsize(dtype)`.
 *
 * @example
 * ```ts
 * import { tensorByteLength } from "./dtypes.ts";
 * if (tensorByteLength("F16", [3, 4]) !== 24) throw new Error("wrong");
 * ```
 */
export function tensorByteLength(dtype: SafetensorsDtype, shape: readonly number[]): number {
  return shapeSize(shape) * dtypeItemsize(dtype);
}

// ---- scalar bit conversions -------------------------------------------------------------------

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** f32 bit pattern → f16 bit pattern, round-to-nearest-even, NaN stays (quiet) NaN. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00; // overflow → ±Inf
  if (e > 0) {
    let h = sign | (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry rolls into the exponent, as it should
    return h;
  }
  // f16 subnormal: value = m · 2^-24 with m = full · 2^(exp-126)
  const shift = 14 - e;
  if (shift > 24) return sign; // below half the smallest subnormal → ±0
  const full = mant | 0x800000;
  let h = full >>> shift;
  const rem = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) !== 0)) h++;
  return sign | h;
}

/** f32 bit pattern → bf16 bit pattern, round-to-nearest-even, NaN stays (quiet) NaN. */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Uint32Array | undefined;
/** f16 bits → f32 bits for all 65536 patterns (256 KiB, built on first use). */
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  const asFloat = new Float32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0x1f) table[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    else {
      const v = exp === 0 ? mant * 2 ** -24 : (1 + mant / 1024) * 2 ** (exp - 15);
      asFloat[h] = sign ? -v : v;
    }
  }
  return (f16Table = table);
}

/**
 * Decodes one IEEE binary16 bit pattern.
 *
 * @example
 * ```ts
 * import { f16BitsToNumber } from "./dtypes.ts";
 * if (f16BitsToNumber(0x3c00) !== 1 || f16BitsToNumber(0xfc00) !== -Infinity) throw new Error("wrong");
 * ```
 */
export function f16BitsToNumber(bits: number): number {
  U32[0] = f16ToF32Table()[bits & 0xffff];
  return F32[0];
}

/**
 * Encodes a number as binary16 bits (via f32, then round-to-nearest-even).
 *
 * @example
 * ```ts
 * import { numberToF16Bits } from "./dtypes.ts";
 * if (numberToF16Bits(1) !== 0x3c00 || numberToF16Bits(65520) !== 0x7c00) throw new Error("wrong");
 * ```
 */
export function numberToF16Bits(value: number): number {
  F32[0] = value;
  return f32BitsToF16Bits(U32[0]);
}

/**
 * Decodes one bfloat16 bit pattern (the upper half of an f32).
 *
 * @example
 * ```ts
 * import { bf16BitsToNumber } from "./dtypes.ts";
 * if (bf16BitsToNumber(0x3f80) !== 1) throw new Error("wrong");
 * ```
 */
export function bf16BitsToNumber(bits: number): number {
  U32[0] = (bits & 0xffff) << 16;
  return F32[0];
}

/**
 * Encodes a number as bfloat16 bits (via f32, then round-to-nearest-even).
 *
 * @example
 * ```ts
 * import { numberToBf16Bits } from "./dtypes.ts";
 * if (numberToBf16Bits(1) !== 0x3f80 || numberToBf16Bits(1 + 2 ** -8) !== 0x3f80) throw new Error("wrong");
 * ```
 */
export function numberToBf16Bits(value: number): number {
  F32[0] = value;
  return f32BitsToBf16Bits(U32[0]);
}

// ---- array conversions --------------------------------------------------------------------------

/**
 * Widens f16 bit patterns to f32 (exact).
 *
 * @example
 * ```ts
 * import { f16ToFloat32 } from "./dtypes.ts";
 * const out = f16ToFloat32(new Uint16Array([0x3c00, 0xc000, 0x0001]));
 * if (out[0] !== 1 || out[1] !== -2 || out[2] !== 2 ** -24) throw new Error("wrong");
 * ```
 */
export function f16ToFloat32(bits: Uint16Array): Float32Array {
  const table = f16ToF32Table();
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return new Float32Array(out.buffer);
}

/**
 * Narrows f32 values to f16 bit patterns, round-to-nearest-even; overflow gives ±Inf.
 *
 * @example
 * ```ts
 * import { float32ToF16 } from "./dtypes.ts";
 * const bits = float32ToF16(new Float32Array([1, -2, 1e6]));
 * if (bits[0] !== 0x3c00 || bits[1] !== 0xc000 || bits[2] !== 0x7c00) throw new Error("wrong");
 * ```
 */
export function float32ToF16(values: Float32Array): Uint16Array {
  const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(src[i]);
  return out;
}

/**
 * Widens bf16 bit patterns to f32 (exact: `bits << 16`).
 *
 * @example
 * ```ts
 * import { bf16ToFloat32 } from "./dtypes.ts";
 * if (bf16ToFloat32(new Uint16Array([0x3f80, 0xc040]))[1] !== -3) throw new Error("wrong");
 * ```
 */
export function bf16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

/**
 * Narrows f32 values to bf16 bit patterns, round-to-nearest-even.
 *
 * @example
 * ```ts
 * import { float32ToBf16 } from "./dtypes.ts";
 * if (float32ToBf16(new Float32Array([-3]))[0] !== 0xc040) throw new Error("wrong");
 * ```
 */
export function float32ToBf16(values: Float32Array): Uint16Array {
  const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(src[i]);
  return out;
}

let fp8Tables: { F8_E4M3: Float32Array; F8_E5M2: Float32Array } | undefined;
function fp8Table(dtype: "F8_E4M3" | "F8_E5M2"): Float32Array {
  if (!fp8Tables) {
    const e4m3 = new Float32Array(256);
    const e5m2 = new Float32Array(256);
    for (let b = 0; b < 256; b++) {
      const sign = b & 0x80 ? -1 : 1;
      const exp = (b >>> 3) & 0xf;
      const mant = b & 7;
      e4m3[b] = (b & 0x7f) === 0x7f
        ? NaN
        : sign * (exp === 0 ? mant * 2 ** -9 : (1 + mant / 8) * 2 ** (exp - 7));
      e5m2[b] = f16BitsToNumber(b << 8); // E5M2 is the upper byte of an f16
    }
    fp8Tables = { F8_E4M3: e4m3, F8_E5M2: e5m2 };
  }
  return fp8Tables[dtype];
}

/** `bytes` with its start aligned for `itemsize` (copied only when it is not). */
function alignedBuffer(bytes: Uint8Array, itemsize: number, dtype: string): Uint8Array {
  if (bytes.byteLength % itemsize !== 0) {
    throw new RangeError(
      `${bytes.byteLength} bytes is not a whole number of ${dtype} elements (${itemsize} bytes each)`,
    );
  }
  return bytes.byteOffset % itemsize === 0 ? bytes : bytes.slice();
}

/**
 * Views raw little-endian bytes as the dtype's natural typed array (see
 * {@linkcode TensorTypedArray}). Shares memory with `bytes` unless its offset is misaligned.
 *
 * @example
 * ```ts
 * import { toTyped } from "./dtypes.ts";
 * const ints = toTyped("I32", new Uint8Array([1, 0, 0, 0, 255, 255, 255, 255]));
 * if (!(ints instanceof Int32Array) || ints[1] !== -1) throw new Error("wrong");
 * ```
 */
export function toTyped(dtype: SafetensorsDtype, bytes: Uint8Array): TensorTypedArray {
  const size = dtypeItemsize(dtype);
  const b = alignedBuffer(bytes, size, dtype);
  const n = b.byteLength / size;
  switch (dtype) {
    case "F64":
      return new Float64Array(b.buffer, b.byteOffset, n);
    case "F32":
      return new Float32Array(b.buffer, b.byteOffset, n);
    case "F16":
    case "BF16":
    case "U16":
      return new Uint16Array(b.buffer, b.byteOffset, n);
    case "I64":
      return new BigInt64Array(b.buffer, b.byteOffset, n);
    case "U64":
      return new BigUint64Array(b.buffer, b.byteOffset, n);
    case "I32":
      return new Int32Array(b.buffer, b.byteOffset, n);
    case "U32":
      return new Uint32Array(b.buffer, b.byteOffset, n);
    case "I16":
      return new Int16Array(b.buffer, b.byteOffset, n);
    case "I8":
      return new Int8Array(b.buffer, b.byteOffset, n);
    case "U8":
    case "BOOL":
    case "F8_E4M3":
    case "F8_E5M2":
      return b;
  }
}

/**
 * Decodes raw little-endian bytes of any dtype to a new `Float32Array` (F64 and 64-bit
 * integers lose precision past f32; BOOL gives 0/1).
 *
 * @example
 * ```ts
 * import { toFloat32 } from "./dtypes.ts";
 * const f = toFloat32("BF16", new Uint8Array([0x80, 0x3f, 0x40, 0xc0]));
 * if (f[0] !== 1 || f[1] !== -3) throw new Error("wrong");
 * const big = toFloat32("I64", new Uint8Array(new BigInt64Array([-(2n ** 40n)]).buffer));
 * if (big[0] !== -(2 ** 40)) throw new Error("wrong");
 * ```
 */
export function toFloat32(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  const typed = toTyped(dtype, bytes);
  switch (dtype) {
    case "F32":
      return (typed as Float32Array).slice();
    case "F16":
      return f16ToFloat32(typed as Uint16Array);
    case "BF16":
      return bf16ToFloat32(typed as Uint16Array);
    case "F8_E4M3":
    case "F8_E5M2": {
      const table = fp8Table(dtype);
      const out = new Float32Array(typed.length);
      for (let i = 0; i < typed.length; i++) out[i] = table[(typed as Uint8Array)[i]];
      return out;
    }
    case "I64":
    case "U64": {
      const src = typed as BigInt64Array | BigUint64Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    case "BOOL": {
      const out = new Float32Array(typed.length);
      for (let i = 0; i < typed.length; i++) out[i] = (typed as Uint8Array)[i] !== 0 ? 1 : 0;
      return out;
    }
    default:
      return Float32Array.from(typed as Exclude<TensorTypedArray, BigInt64Array | BigUint64Array>);
  }
}

/**
 * Encodes f32 values as raw little-endian bytes of a float dtype (F64, F32, F16 or BF16;
 * narrowing rounds to nearest even). Other dtypes throw a `RangeError`.
 *
 * @example
 * ```ts
 * import { fromFloat32, toFloat32 } from "./dtypes.ts";
 * const bytes = fromFloat32("F16", new Float32Array([0.5, -1.5]));
 * if (bytes.byteLength !== 4 || toFloat32("F16", bytes)[1] !== -1.5) throw new Error("wrong");
 * ```
 */
export function fromFloat32(dtype: SafetensorsDtype, values: Float32Array): Uint8Array {
  switch (parseDtype(dtype)) {
    case "F32":
      return new Uint8Array(values.slice().buffer);
    case "F64":
      return new Uint8Array(Float64Array.from(values).buffer);
    case "F16":
      return new Uint8Array(float32ToF16(values).buffer);
    case "BF16":
      return new Uint8Array(float32ToBf16(values).buffer);
    default:
      throw new RangeError(
        `fromFloat32() encodes F64, F32, F16 or BF16, not ${dtype}; convert integers yourself`,
      );
  }
}

/**
 * GPTQ 4-bit checkpoints (AutoGPTQ / GPTQModel / TheBloke, FORMATS.md §3): dequantize the packed
 * `qweight` / `qzeros` / `scales` / `g_idx` tensors to a dense `nn.Linear` weight, and a round-to-nearest
 * packer producing the same layout (for fixtures and tests; it is not the Hessian-based GPTQ solver).
 *
 * Legend: `I` in_features, `O` out_features, `G` group size (`-1` means `I`), `NG` number of groups.
 *
 * Packing (4-bit, unsigned nibbles, least significant first, words viewed as int32):
 * - `qweight[r, c]` `[I/8, O]`: nibble `j` holds the code of input `8r + j`, output `c` (packed along **input**).
 * - `qzeros[g, c]` `[NG, O/8]`: nibble `j` holds the zero point of output `8c + j` (packed along **output**).
 * - `format "gptq"` (v1) stores `zero - 1`; readers add 1 modulo 16. `"gptq_v2"` stores the zero as is.
 * @module
 */

import { describe, f32 } from "./_options.ts";
import { boolean, custom, defineOptions, either, type FieldsOf, integer, oneOf } from "../options/schema.ts";

/** On-disk zero-point convention: v1 (`"gptq"`, stored zero − 1) or `"gptq_v2"` (stored as is). */
export type GptqFormat = "gptq" | "gptq_v2";

/** The tensors of one GPTQ-quantized Linear, as typed arrays. */
export interface GptqLayer {
  /** Input features `I` (a multiple of 8). */
  inFeatures: number;
  /** Output features `O` (a multiple of 8). */
  outFeatures: number;
  /** `[I/8, O]` packed codes, row-major. */
  qweight: Int32Array;
  /** `[NG, O/8]` packed zero points, row-major. */
  qzeros: Int32Array;
  /** `[NG, O]` scales (F16 on disk, widened to float32). */
  scales: Float32Array;
  /** `[I]` group of each input channel; arbitrary order with act-order (`desc_act`). */
  gIdx: Int32Array;
}

/** Options of {@linkcode dequantizeGptq}. */
export interface DequantizeGptqOptions {
  /** Bits per weight; only 4 is supported. @default 4 */
  bits?: number;
  /** Zero-point convention (`checkpoint_format`; missing means v1). @default "gptq" */
  format?: GptqFormat;
}

const FORMATS: readonly GptqFormat[] = ["gptq", "gptq_v2"];

const bitsField = oneOf("Bits per weight; only 4 is supported.", [4] as const, { default: 4 });

/** The schema of {@linkcode dequantizeGptq}'s options. */
export const dequantizeGptqSchema = defineOptions(
  "dequantizeGptq",
  {
    bits: bitsField,
    format: oneOf("Zero-point convention (checkpoint_format; missing means v1).", FORMATS, {
      default: "gptq",
    }),
  } satisfies FieldsOf<DequantizeGptqOptions>,
);

/** Real zero point from a stored 4-bit nibble. */
function realZero(stored: number, format: GptqFormat): number {
  switch (format) {
    case "gptq":
      return (stored + 1) & 0xf; // AutoGPTQ qlinear_cuda_old: zeros = (zeros + 1) & 0xF
    case "gptq_v2":
      return stored;
    default: {
      const never: never = format;
      throw new RangeError(`unknown GPTQ format ${describe(never)}`);
    }
  }
}

/**
 * Dequantizes a 4-bit GPTQ Linear: `W[j, k] = scales[g, j] * (q[k, j] - zero[g, j])` with
 * `g = gIdx[k]`, computed exactly in float32 (torch's fp16 path would round the product to fp16).
 *
 * @param layer the packed tensors and feature counts.
 * @param options bits (4) and zero-point format.
 * @returns the dense weight `[O, I]` row-major (HF `nn.Linear.weight` layout).
 * @example
 * ```ts
 * import { dequantizeGptq } from "./gptq.ts";
 * // I = O = 8, one group; every code 9, v1 stored zero 7 (real zero 8), scale 0.5 → weights 0.5
 * const layer = {
 *   inFeatures: 8, outFeatures: 8,
 *   qweight: new Int32Array(8).fill(0x99999999 | 0), qzeros: new Int32Array([0x77777777]),
 *   scales: new Float32Array(8).fill(0.5), gIdx: new Int32Array(8),
 * };
 * const w = dequantizeGptq(layer);
 * if (w.length !== 64 || w.some((v) => v !== 0.5)) throw new Error(String(w));
 * if (dequantizeGptq(layer, { format: "gptq_v2" })[0] !== 1) throw new Error("v2 takes the zero as stored");
 * ```
 */
export function dequantizeGptq(layer: GptqLayer, options: DequantizeGptqOptions = {}): Float32Array {
  const fn = "dequantizeGptq";
  const { format } = dequantizeGptqSchema.parse(options);
  const { inFeatures: I, outFeatures: O, qweight, qzeros, scales, gIdx } = layer;
  if (
    !Number.isSafeInteger(I) || !Number.isSafeInteger(O) || I <= 0 || O <= 0 || I % 8 !== 0 || O % 8 !== 0
  ) {
    throw new RangeError(
      `${fn}: inFeatures and outFeatures must be positive multiples of 8, received ${I} and ${O}.`,
    );
  }
  const need = (name: string, arr: unknown, ctor: typeof Int32Array | typeof Float32Array, n: number) => {
    if (!(arr instanceof ctor) || arr.length !== n) {
      throw new TypeError(`${fn}: ${name} must be a ${ctor.name} of ${n} values, received ${describe(arr)}.`);
    }
  };
  need("qweight ([I/8, O])", qweight, Int32Array, (I / 8) * O);
  need("gIdx ([I])", gIdx, Int32Array, I);
  if (!(scales instanceof Float32Array) || scales.length === 0 || scales.length % O !== 0) {
    throw new TypeError(
      `${fn}: scales must be a Float32Array of [groups, ${O}] values, received ${describe(scales)}.`,
    );
  }
  const NG = scales.length / O;
  need("qzeros ([groups, O/8])", qzeros, Int32Array, NG * (O / 8));
  for (let k = 0; k < I; k++) {
    if (gIdx[k] < 0 || gIdx[k] >= NG) {
      throw new RangeError(`${fn}: gIdx[${k}] = ${gIdx[k]} is outside the ${NG} groups of scales.`);
    }
  }
  // Unpack zeros once: [NG, O]
  const zeros = new Uint8Array(NG * O);
  for (let g = 0; g < NG; g++) {
    for (let c = 0; c < O / 8; c++) {
      const word = qzeros[g * (O / 8) + c];
      for (let j = 0; j < 8; j++) zeros[g * O + 8 * c + j] = realZero((word >>> (4 * j)) & 0xf, format);
    }
  }
  const out = new Float32Array(O * I); // [O, I]
  for (let r = 0; r < I / 8; r++) {
    for (let c = 0; c < O; c++) {
      const word = qweight[r * O + c];
      for (let j = 0; j < 8; j++) {
        const k = 8 * r + j;
        const g = gIdx[k];
        out[c * I + k] = scales[g * O + c] * (((word >>> (4 * j)) & 0xf) - zeros[g * O + c]);
      }
    }
  }
  return out;
}

/** Options of {@linkcode packGptq}. */
export interface PackGptqOptions {
  /** Bits per weight; only 4 is supported. @default 4 */
  bits?: number;
  /** Input channels per group, or -1 for one group over all inputs. @default 128 */
  groupSize?: number;
  /** Symmetric quantization (zero point 8). @default true */
  sym?: boolean;
  /** Zero-point convention to write. @default "gptq" */
  format?: GptqFormat;
  /** Group of each input channel, `[I]` (act-order); each group must hold at most `groupSize` channels. @default k / groupSize */
  gIdx?: Int32Array;
}

/** The schema of {@linkcode packGptq}'s options. */
export const packGptqSchema = defineOptions(
  "packGptq",
  {
    bits: bitsField,
    groupSize: either("Input channels per group, or -1 for one group over all inputs.", [
      integer("Channels per group.", { min: 1 }),
      oneOf("One group.", [-1] as const),
    ], { default: 128 }),
    sym: boolean("Symmetric quantization (zero point 8).", { default: true }),
    format: oneOf("Zero-point convention to write.", FORMATS, { default: "gptq" }),
    gIdx: custom<Int32Array>(
      "Group of each input channel (act-order).",
      "an Int32Array",
      (v) => v instanceof Int32Array,
      {
        example: undefined,
      },
    ),
  } satisfies FieldsOf<PackGptqOptions>,
);

/** `torch.round`: half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Round-to-nearest 4-bit quantization into the GPTQ layout, with AutoGPTQ's quantizer grid
 * (`quantizer.py`): per group and output, `xmin = min(w, 0)`, `xmax = max(w, 0)` (sym: ±max|w|),
 * `scale = f16((xmax - xmin) / 15)`, `zero = 8` (sym) or `round(-xmin / scale)`,
 * `q = clamp(round(w / scale) + zero, 0, 15)`, all in float32 with ties to even.
 *
 * @param weight `[O, I]` row-major dense weight.
 * @param shape `[O, I]`.
 * @param options group size, symmetry, format, act-order `gIdx`.
 * @returns the packed layer (scales already rounded to fp16 values).
 * @example
 * ```ts
 * import { dequantizeGptq, packGptq } from "./gptq.ts";
 * const w = Float32Array.from({ length: 8 * 16 }, (_, i) => Math.cos(i));
 * const layer = packGptq(w, [8, 16], { groupSize: 8 });
 * if (layer.qweight.length !== 16 || layer.scales.length !== 16 || layer.qzeros[0] !== 0x77777777) throw new Error("layout");
 * const back = dequantizeGptq(layer);
 * if (back.some((v, i) => Math.abs(v - w[i]) > 0.08)) throw new Error("round trip");
 * ```
 */
export function packGptq(
  weight: Float32Array,
  shape: readonly [number, number],
  options: PackGptqOptions = {},
): GptqLayer {
  const fn = "packGptq";
  const { format } = packGptqSchema.parse(options);
  const [O, I] = shape;
  if (
    !Number.isSafeInteger(I) || !Number.isSafeInteger(O) || I <= 0 || O <= 0 || I % 8 !== 0 || O % 8 !== 0
  ) {
    throw new RangeError(`${fn}: shape must be [out, in] with positive multiples of 8, received [${shape}].`);
  }
  if (!(weight instanceof Float32Array) || weight.length !== O * I) {
    throw new TypeError(
      `${fn}: weight must be a Float32Array of ${O * I} values, received ${describe(weight)}.`,
    );
  }
  const groupSize = options.groupSize ?? 128;
  if (groupSize !== -1 && (!Number.isSafeInteger(groupSize) || groupSize <= 0)) {
    throw new RangeError(
      `${fn}: groupSize must be -1 or a positive integer, received ${describe(groupSize)}.`,
    );
  }
  const G = groupSize === -1 ? I : groupSize;
  const NG = Math.ceil(I / G);
  const gIdx = options.gIdx ?? Int32Array.from({ length: I }, (_, k) => Math.floor(k / G));
  if (!(gIdx instanceof Int32Array) || gIdx.length !== I) {
    throw new TypeError(`${fn}: gIdx must be an Int32Array of ${I} values, received ${describe(gIdx)}.`);
  }
  const members: number[][] = Array.from({ length: NG }, () => []);
  for (let k = 0; k < I; k++) {
    if (gIdx[k] < 0 || gIdx[k] >= NG) {
      throw new RangeError(`${fn}: gIdx[${k}] = ${gIdx[k]} is outside 0..${NG - 1}.`);
    }
    members[gIdx[k]].push(k);
  }
  if (members.some((m) => m.length > G)) {
    throw new RangeError(
      `${fn}: a group in gIdx holds more than groupSize ${G} channels; use a permutation of k / G.`,
    );
  }
  const sym = options.sym ?? true;
  const maxq = 15;
  const scales = new Float32Array(NG * O);
  const zeros = new Uint8Array(NG * O);
  const q = new Uint8Array(I * O); // [I, O]
  for (let g = 0; g < NG; g++) {
    for (let c = 0; c < O; c++) {
      let xmin = 0;
      let xmax = 0;
      for (const k of members[g]) {
        const v = weight[c * I + k];
        if (v < xmin) xmin = v;
        if (v > xmax) xmax = v;
      }
      if (sym) {
        xmax = Math.max(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
      }
      if (xmin === 0 && xmax === 0) {
        xmin = -1;
        xmax = 1;
      }
      const scale = Math.f16round(f32(f32(xmax - xmin) / maxq));
      const zero = sym ? (maxq + 1) / 2 : Math.min(maxq, Math.max(0, roundHalfEven(f32(-xmin / scale))));
      scales[g * O + c] = scale;
      zeros[g * O + c] = zero;
      for (const k of members[g]) {
        q[k * O + c] = Math.min(maxq, Math.max(0, roundHalfEven(f32(weight[c * I + k] / scale)) + zero));
      }
    }
  }
  const qweight = new Int32Array((I / 8) * O);
  for (let r = 0; r < I / 8; r++) {
    for (let c = 0; c < O; c++) {
      let word = 0;
      for (let j = 0; j < 8; j++) word |= q[(8 * r + j) * O + c] << (4 * j);
      qweight[r * O + c] = word;
    }
  }
  const qzeros = new Int32Array(NG * (O / 8));
  for (let g = 0; g < NG; g++) {
    for (let c = 0; c < O / 8; c++) {
      let word = 0;
      for (let j = 0; j < 8; j++) {
        const z = zeros[g * O + 8 * c + j];
        // v1 stores zero - 1 as a clean nibble (AutoGPTQ's own packer smears -1 into higher nibbles).
        word |= (format === "gptq" ? (z - 1) & 0xf : z) << (4 * j);
      }
      qzeros[g * (O / 8) + c] = word;
    }
  }
  return { inFeatures: I, outFeatures: O, qweight, qzeros, scales, gIdx: Int32Array.from(gIdx) };
}

/**
 * The 4-bit weight formats nbtune stores, one row each, with what they cost: the planner
 * (`lib/plan/`) and the engine estimate read bytes and bits per parameter from here.
 * Adding a format is its codec file plus one row.
 *
 * - `nf4`, `fp4` (bitsandbytes, FORMATS.md §2): two 4-bit codes per byte; one fp32 absmax
 *   per block of `blocksize`, or with double quantization one u8 code per block and one
 *   fp32 scale per 256 blocks (plus the 16-entry code table, the 256-entry nested table
 *   and the nested offset, once per tensor).
 * - `gptq` (AutoGPTQ, 4 bits): `qweight` (8 codes per int32), per group of `groupSize`
 *   input channels one fp16 scale and one 4-bit zero point (8 per int32) per output, and
 *   `g_idx` (one int32 per input channel).
 *
 * Dimension legend: O out features, I in features, n = O·I.
 * @module
 */
import { NESTED_BLOCKSIZE } from "./double_quant.ts";

/** Settings that change a format's size (each format reads the ones it has). */
export interface QuantSizeSettings {
  /** bitsandbytes: elements per absmax block. @default {64} */
  blocksize?: number;
  /** bitsandbytes: quantize the absmax values again. @default {true} */
  doubleQuant?: boolean;
  /** GPTQ: input channels per group. @default {128} */
  groupSize?: number;
}

/** Bytes of one quantized `[O, I]` matrix. */
export interface QuantMatrixBytes {
  /** Packed codes. */
  codes: number;
  /** Scales, zero points, code tables and indices. */
  constants: number;
}

/** One quantized weight format. */
export interface QuantFormat {
  readonly name: string;
  /** One line for docs and tables. */
  readonly doc: string;
  /** Bits of one weight code. */
  readonly codeBits: number;
  /** `loadModel` / `quantizeCheckpoint` can produce it (the `quantize` option's `type`). */
  readonly quantizeOnLoad: boolean;
  /** Exact bytes of one `[O, I]` matrix as the checkpoint stores it. */
  matrixBytes(outFeatures: number, inFeatures: number, settings?: QuantSizeSettings): QuantMatrixBytes;
  /** Host bytes our quantized layer reports in `storage()` (codes and per-block constants). */
  layerBytes(outFeatures: number, inFeatures: number, settings?: QuantSizeSettings): number;
}

function bnbConstants(blocks: number, doubleQuant: boolean): { perBlock: number; perTensor: number } {
  const quantMap = 16 * 4;
  return doubleQuant
    ? { perBlock: blocks + Math.ceil(blocks / NESTED_BLOCKSIZE) * 4, perTensor: quantMap + 256 * 4 + 4 }
    : { perBlock: blocks * 4, perTensor: quantMap };
}

const bnb4 = (name: string, doc: string): QuantFormat => ({
  name,
  doc,
  codeBits: 4,
  quantizeOnLoad: true,
  matrixBytes(O, I, s = {}) {
    const n = O * I, blocks = Math.ceil(n / (s.blocksize ?? 64));
    const c = bnbConstants(blocks, s.doubleQuant ?? true);
    return { codes: Math.ceil(n / 2), constants: c.perBlock + c.perTensor };
  },
  layerBytes(O, I, s = {}) {
    const n = O * I, blocks = Math.ceil(n / (s.blocksize ?? 64));
    const constantBits = (s.doubleQuant ?? true)
      ? 8 * blocks + 32 * Math.ceil(blocks / NESTED_BLOCKSIZE)
      : 32 * blocks;
    // the same float steps as `bitsPerParam(state) · numel / 8` in storage.ts
    return Math.ceil(((8 * Math.ceil(n / 2) + constantBits) / n) * n / 8);
  },
});

function gptqMatrixBytes(O: number, I: number, s: QuantSizeSettings = {}): QuantMatrixBytes {
  const groups = Math.ceil(I / (s.groupSize ?? 128));
  // qweight [I/8, O] int32; qzeros [groups, O/8] int32, scales [groups, O] fp16, g_idx [I] int32
  return { codes: Math.ceil((O * I) / 2), constants: (groups * O) / 2 + 2 * groups * O + 4 * I };
}

/** A quantized format's name. */
export type QuantFormatName = "nf4" | "fp4" | "gptq";

/** Every quantized weight format by name. */
export const QUANT_FORMATS: Readonly<Record<QuantFormatName, QuantFormat>> = {
  nf4: bnb4("nf4", "4-bit NormalFloat (QLoRA), bitsandbytes blockwise absmax"),
  fp4: bnb4("fp4", "4-bit float (e2m1), bitsandbytes blockwise absmax"),
  gptq: {
    name: "gptq",
    doc: "GPTQ 4-bit (AutoGPTQ layout): per-group fp16 scales and 4-bit zero points; loaded, not produced",
    codeBits: 4,
    quantizeOnLoad: false,
    matrixBytes: gptqMatrixBytes,
    layerBytes(O, I, s = {}) {
      const b = gptqMatrixBytes(O, I, s);
      return b.codes + b.constants;
    },
  },
};

/**
 * The format called `name`, or a RangeError listing the known ones.
 *
 * @example
 * ```ts
 * import { quantFormat } from "./formats.ts";
 * // QLoRA's 4.127 bits per parameter: NF4 codes + double-quantized absmax at blocksize 64
 * const b = quantFormat("nf4").layerBytes(4096, 4096, { blocksize: 64, doubleQuant: true });
 * if ((8 * b / (4096 * 4096)).toFixed(3) !== "4.127") throw new Error(String(8 * b / 4096 ** 2));
 * ```
 */
export function quantFormat(name: string): QuantFormat {
  const f = (QUANT_FORMATS as Record<string, QuantFormat>)[name];
  if (!f) {
    throw new RangeError(
      `unknown quantized format "${name}" (known: ${Object.keys(QUANT_FORMATS).join(", ")})`,
    );
  }
  return f;
}

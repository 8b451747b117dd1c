/**
 * GGUF (llama.cpp / ggml) files: header, metadata key-values and tensor infos, with validation, and
 * dequantization of F32, F16, BF16, Q4_0 and Q8_0 tensors to float32 (FORMATS.md §6, ggml
 * `docs/gguf.md`, `ggml-common.h`, `ggml-quants.c`).
 *
 * Layout (little-endian): `u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | kv[] | tensor_info[] |
 * padding to ALIGNMENT | tensor data`. Tensor offsets are relative to the data start and multiples of the
 * alignment (`general.alignment`, default 32). Dims are listed innermost first, so an HF `[out, in]`
 * matrix has dims `[in, out]`; {@linkcode GgufTensorInfo.shape} gives the row-major (outermost first) shape.
 *
 * Block layouts: `Q4_0` = 32 values in 18 bytes `f16 d; u8 qs[16]`, value `j < 16` in the **low** nibble
 * of `qs[j]` and value `j + 16` in its high nibble, `y = (q − 8)·d`. `Q8_0` = 32 values in 34 bytes
 * `f16 d; i8 qs[32]`, `y = q·d`.
 * @module
 */
import { bf16ToFloat32, f16BitsToNumber, f16ToFloat32 } from "./dtypes.ts";
import { FormatError } from "./format_error.ts";

/** A metadata value: 64-bit integers are `bigint`, other numbers `number`; arrays may nest. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** ggml tensor type ids with their block size (values) and type size (bytes per block), `ggml.c` type_traits. */
export const GGML_TYPES: Readonly<Record<number, { name: string; blockSize: number; typeSize: number }>> = {
  0: { name: "F32", blockSize: 1, typeSize: 4 },
  1: { name: "F16", blockSize: 1, typeSize: 2 },
  2: { name: "Q4_0", blockSize: 32, typeSize: 18 },
  3: { name: "Q4_1", blockSize: 32, typeSize: 20 },
  6: { name: "Q5_0", blockSize: 32, typeSize: 22 },
  7: { name: "Q5_1", blockSize: 32, typeSize: 24 },
  8: { name: "Q8_0", blockSize: 32, typeSize: 34 },
  9: { name: "Q8_1", blockSize: 32, typeSize: 36 },
  10: { name: "Q2_K", blockSize: 256, typeSize: 84 },
  11: { name: "Q3_K", blockSize: 256, typeSize: 110 },
  12: { name: "Q4_K", blockSize: 256, typeSize: 144 },
  13: { name: "Q5_K", blockSize: 256, typeSize: 176 },
  14: { name: "Q6_K", blockSize: 256, typeSize: 210 },
  15: { name: "Q8_K", blockSize: 256, typeSize: 292 },
  16: { name: "IQ2_XXS", blockSize: 256, typeSize: 66 },
  17: { name: "IQ2_XS", blockSize: 256, typeSize: 74 },
  18: { name: "IQ3_XXS", blockSize: 256, typeSize: 98 },
  19: { name: "IQ1_S", blockSize: 256, typeSize: 50 },
  20: { name: "IQ4_NL", blockSize: 32, typeSize: 18 },
  21: { name: "IQ3_S", blockSize: 256, typeSize: 110 },
  22: { name: "IQ2_S", blockSize: 256, typeSize: 82 },
  23: { name: "IQ4_XS", blockSize: 256, typeSize: 136 },
  24: { name: "I8", blockSize: 1, typeSize: 1 },
  25: { name: "I16", blockSize: 1, typeSize: 2 },
  26: { name: "I32", blockSize: 1, typeSize: 4 },
  27: { name: "I64", blockSize: 1, typeSize: 8 },
  28: { name: "F64", blockSize: 1, typeSize: 8 },
  29: { name: "IQ1_M", blockSize: 256, typeSize: 56 },
  30: { name: "BF16", blockSize: 1, typeSize: 2 },
  34: { name: "TQ1_0", blockSize: 256, typeSize: 54 },
  35: { name: "TQ2_0", blockSize: 256, typeSize: 66 },
  39: { name: "MXFP4", blockSize: 32, typeSize: 17 },
};

/** Types {@linkcode dequantizeGguf} supports. */
export const GGUF_DEQUANT_TYPES: readonly string[] = ["F32", "F16", "BF16", "Q4_0", "Q8_0"];

/** One tensor's description from the header. */
export interface GgufTensorInfo {
  name: string;
  /** Dimensions as stored, innermost (fastest-varying) first. */
  dims: number[];
  /** Row-major shape, outermost first (`dims` reversed): an HF `[out, in]` weight. */
  shape: number[];
  /** ggml type id and name. */
  type: number;
  typeName: string;
  /** Offset relative to the start of the tensor data. */
  offset: number;
  /** Absolute offset in the file. */
  fileOffset: number;
  /** Bytes of the tensor's data. */
  byteLength: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  version: number;
  /** Metadata in file order. */
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** `general.alignment` or 32. */
  alignment: number;
  /** Absolute offset of the tensor data (the header end padded to `alignment`). */
  dataOffset: number;
}

class NeedMore extends Error {}

const MAX_DIMS = 4; // GGML_MAX_DIMS

/** Sequential little-endian reader over a prefix of the file; throws NeedMore when it runs out. */
class Cursor {
  pos = 0;
  readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly complete: boolean,
    readonly fail: (d: string, at: number) => never,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number, what: string): void {
    if (this.pos + n <= this.bytes.length) return;
    if (!this.complete) throw new NeedMore();
    this.fail(
      `the file ends inside ${what} (needs ${n} bytes, ${this.bytes.length - this.pos} left)`,
      this.pos,
    );
  }
  u32(what = "a u32"): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(what = "a u64"): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** A u64 that must fit a JS safe integer (counts, lengths, dims, offsets). */
  size(what: string): number {
    const at = this.pos;
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is too large`, at);
    return Number(v);
  }
  string(what: string): string {
    const at = this.pos;
    const n = this.size(`the length of ${what}`);
    if (this.complete && n > this.bytes.length - this.pos) {
      this.fail(`${what} claims ${n} bytes but only ${this.bytes.length - this.pos} remain`, at);
    }
    this.need(n, what);
    try {
      const s = new TextDecoder("utf-8", { fatal: true }).decode(this.bytes.subarray(this.pos, this.pos + n));
      this.pos += n;
      return s;
    } catch {
      return this.fail(`${what} is not valid UTF-8`, at);
    }
  }
}

/** Element readers of the 13 GGUF value types (`gguf_type`). */
function readValue(c: Cursor, type: number, key: string, depth: number): GgufValue {
  const at = c.pos;
  const fixed = (n: number, get: (o: number) => number | bigint) => {
    c.need(n, `the value of "${key}"`);
    const v = get(c.pos);
    c.pos += n;
    return v;
  };
  switch (type) {
    case 0:
      return fixed(1, (o) => c.view.getUint8(o));
    case 1:
      return fixed(1, (o) => c.view.getInt8(o));
    case 2:
      return fixed(2, (o) => c.view.getUint16(o, true));
    case 3:
      return fixed(2, (o) => c.view.getInt16(o, true));
    case 4:
      return fixed(4, (o) => c.view.getUint32(o, true));
    case 5:
      return fixed(4, (o) => c.view.getInt32(o, true));
    case 6:
      return fixed(4, (o) => c.view.getFloat32(o, true));
    case 7: {
      const b = fixed(1, (o) => c.view.getUint8(o));
      if (b > 1) c.fail(`bool value of "${key}" must be 0 or 1, got ${b}`, at);
      return b === 1;
    }
    case 8:
      return c.string(`the string value of "${key}"`);
    case 9: {
      if (depth > 8) c.fail(`arrays in "${key}" are nested too deeply`, at);
      const elem = c.u32(`the array type of "${key}"`);
      const n = c.size(`the array length of "${key}"`);
      if (c.complete && n > c.bytes.length - c.pos) {
        c.fail(`array "${key}" claims ${n} elements but only ${c.bytes.length - c.pos} bytes remain`, at);
      }
      const out: GgufValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(c, elem, key, depth + 1);
      return out;
    }
    case 10:
      return fixed(8, (o) => c.view.getBigUint64(o, true));
    case 11:
      return fixed(8, (o) => c.view.getBigInt64(o, true));
    case 12:
      return fixed(8, (o) => c.view.getFloat64(o, true));
    default:
      return c.fail(`unknown value type ${type} for "${key}" (GGUF defines 0–12)`, at - 4);
  }
}

function parse(bytes: Uint8Array, complete: boolean, file: string, fileSize: number): GgufHeader {
  const fail = (detail: string, offset: number): never => {
    throw new FormatError(detail, { file, offset });
  };
  const c = new Cursor(bytes, complete, fail);
  const magic = c.u32("the magic");
  if (magic !== 0x46554747) {
    const got = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    fail(`not a GGUF file: magic bytes are ${got}, expected 47 47 55 46 ("GGUF")`, 0);
  }
  const version = c.u32("the version");
  if (version === 1) {
    fail("GGUF version 1 (32-bit counts) is not supported; convert the file with a current llama.cpp", 4);
  }
  if (version !== 2 && version !== 3) {
    fail(`unsupported GGUF version ${version} (expected 2 or 3; a huge value means a big-endian file)`, 4);
  }
  const nTensors = c.size("the tensor count");
  const nKv = c.size("the metadata count");
  // Each KV needs ≥ 12 bytes and each tensor info ≥ 24: reject absurd counts before allocating.
  if (nKv * 12 + nTensors * 24 > fileSize) {
    fail(`counts ${nTensors} tensors / ${nKv} metadata entries do not fit in ${fileSize} bytes`, 8);
  }
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const at = c.pos;
    const key = c.string(`metadata key ${i}`);
    if (metadata.has(key)) fail(`duplicate metadata key "${key}"`, at);
    const type = c.u32(`the value type of "${key}"`);
    metadata.set(key, readValue(c, type, key, 0));
  }
  let alignment = 32;
  if (metadata.has("general.alignment")) {
    const a = metadata.get("general.alignment");
    if (typeof a !== "number" || !Number.isInteger(a) || a <= 0 || a % 8 !== 0) {
      fail(`general.alignment must be a positive multiple of 8 (u32), got ${String(a)}`, 24);
    }
    alignment = a as number;
  }
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = c.string(`tensor name ${i}`);
    if (names.has(name)) fail(`duplicate tensor name "${name}"`, at);
    names.add(name);
    const nDims = c.u32(`the dimension count of "${name}"`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      fail(`tensor "${name}" has ${nDims} dimensions (ggml allows 1–${MAX_DIMS})`, at);
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.size(`dimension ${d} of "${name}"`));
    const typeAt = c.pos;
    const type = c.u32(`the type of "${name}"`);
    const traits = GGML_TYPES[type];
    if (!traits) fail(`tensor "${name}" has unknown ggml type ${type}`, typeAt);
    const offset = c.size(`the offset of "${name}"`);
    if (offset % alignment !== 0) {
      fail(`tensor "${name}" offset ${offset} is not a multiple of the alignment ${alignment}`, typeAt + 4);
    }
    if (dims[0] % traits.blockSize !== 0) {
      fail(
        `tensor "${name}" row length ${
          dims[0]
        } is not a multiple of the ${traits.name} block size ${traits.blockSize}`,
        at,
      );
    }
    const numel = dims.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(numel)) fail(`tensor "${name}" has too many elements`, at);
    tensors.push({
      name,
      dims,
      shape: [...dims].reverse(),
      type,
      typeName: traits.name,
      offset,
      fileOffset: 0,
      byteLength: (numel / traits.blockSize) * traits.typeSize,
    });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < sorted.length; i++) {
    const t = sorted[i];
    t.fileOffset = dataOffset + t.offset;
    if (i > 0 && t.offset < sorted[i - 1].offset + sorted[i - 1].byteLength) {
      fail(`tensor "${t.name}" overlaps "${sorted[i - 1].name}"`, t.fileOffset);
    }
    if (t.fileOffset + t.byteLength > fileSize) {
      fail(
        `tensor "${t.name}" (${t.byteLength} bytes at ${t.fileOffset}) runs past the end of the ${fileSize}-byte file`,
        t.fileOffset,
      );
    }
  }
  return { version, metadata, tensors, alignment, dataOffset };
}

/**
 * Parses a GGUF header from the file's bytes (the whole file, or enough of its start to hold the header).
 *
 * @param bytes the file contents or a prefix of them.
 * @param options `file` for error messages; `fileSize` when `bytes` is only a prefix (bounds checks).
 * @returns the header; throws a {@linkcode FormatError} (a SyntaxError) naming the byte offset.
 * @example
 * ```ts
 * import { parseGgufHeader } from "./gguf.ts";
 * const b = new Uint8Array(64); const v = new DataView(b.buffer);
 * b.set([0x47, 0x47, 0x55, 0x46]); v.setUint32(4, 3, true); // magic, version 3, 0 tensors, 0 KVs
 * const h = parseGgufHeader(b);
 * if (h.version !== 3 || h.alignment !== 32 || h.dataOffset !== 32) throw new Error(JSON.stringify(h));
 * ```
 */
export function parseGgufHeader(
  bytes: Uint8Array,
  options: { file?: string; fileSize?: number } = {},
): GgufHeader {
  const fileSize = options.fileSize ?? bytes.length;
  try {
    return parse(bytes, bytes.length >= fileSize, options.file ?? "<gguf>", fileSize);
  } catch (e) {
    if (!(e instanceof NeedMore)) throw e;
    throw new RangeError(
      `parseGgufHeader: the header extends past the ${bytes.length} bytes given; pass more of the file`,
    );
  }
}

/** An open GGUF file: its header and tensor readers. */
export interface GgufFile extends Disposable {
  readonly path: string;
  readonly header: GgufHeader;
  /** The tensor info of `name`; throws a RangeError for an unknown name. */
  tensor(name: string): GgufTensorInfo;
  /** The tensor's raw bytes. */
  readBytes(name: string): Promise<Uint8Array>;
  /** The tensor dequantized to float32, row-major in {@linkcode GgufTensorInfo.shape}. */
  readFloat32(name: string): Promise<Float32Array>;
  close(): void;
}

/**
 * Opens a GGUF file, reading only its header (in growing chunks) until tensors are requested.
 *
 * @param path the `.gguf` file.
 * @returns the header and readers; close it (or `using`) when done.
 * @example
 * ```ts
 * import { openGguf } from "./gguf.ts";
 * using g = await openGguf("tests/fixtures/external/gguf/llama-2-tiny-random.gguf");
 * if (g.header.metadata.get("general.architecture") !== "llama") throw new Error("metadata");
 * const t = g.tensor("blk.0.ffn_down.weight"); // dims [32, 8] innermost first → HF [8, 32]
 * if (t.shape.join() !== "8,32" || (await g.readFloat32(t.name)).length !== 256) throw new Error("tensor");
 * ```
 */
export async function openGguf(path: string): Promise<GgufFile> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const readAt = async (offset: number, length: number): Promise<Uint8Array> => {
      const out = new Uint8Array(length);
      await file.seek(offset, Deno.SeekMode.Start);
      let done = 0;
      while (done < length) {
        const n = await file.read(out.subarray(done));
        if (n === null) {
          throw new FormatError(`the file ends at byte ${offset + done}`, {
            file: path,
            offset: offset + done,
          });
        }
        done += n;
      }
      return out;
    };
    let header: GgufHeader | undefined;
    for (let chunk = Math.min(size, 1 << 20); header === undefined; chunk = Math.min(size, chunk * 4)) {
      try {
        header = parse(await readAt(0, chunk), chunk >= size, path, size);
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e;
      }
    }
    const h = header;
    const byName = new Map(h.tensors.map((t) => [t.name, t]));
    const info = (name: string): GgufTensorInfo => {
      const t = byName.get(name);
      if (!t) {
        throw new RangeError(
          `${path} has no tensor "${name}" (it has ${h.tensors.length}, e.g. "${h.tensors[0]?.name}")`,
        );
      }
      return t;
    };
    const close = () => {
      try {
        file.close();
      } catch { /* already closed */ }
    };
    const opened: GgufFile = {
      path,
      header: h,
      tensor: info,
      readBytes: (name) => readAt(info(name).fileOffset, info(name).byteLength),
      readFloat32: async (name) => {
        const t = info(name);
        return dequantizeGguf(
          t.typeName,
          await readAt(t.fileOffset, t.byteLength),
          t.dims.reduce((a, b) => a * b, 1),
        );
      },
      close,
      [Symbol.dispose]: close,
    };
    return opened;
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * Dequantizes ggml tensor data to float32 (ggml-quants.c `dequantize_row_q4_0` / `_q8_0`).
 *
 * @param typeName `"F32"`, `"F16"`, `"BF16"`, `"Q4_0"` or `"Q8_0"`.
 * @param bytes the tensor's raw little-endian bytes.
 * @param numel number of values (a multiple of 32 for the block types).
 * @returns `numel` float32 values in storage order.
 * @example
 * ```ts
 * import { dequantizeGguf } from "./gguf.ts";
 * // one Q8_0 block: d = 0.5 (f16 0x3800), qs = 0, 1, …, 31
 * const b = new Uint8Array(34); b[0] = 0x00; b[1] = 0x38;
 * for (let j = 0; j < 32; j++) b[2 + j] = j;
 * const y = dequantizeGguf("Q8_0", b, 32);
 * if (y[3] !== 1.5 || y[31] !== 15.5) throw new Error(String(y));
 * ```
 */
export function dequantizeGguf(typeName: string, bytes: Uint8Array, numel: number): Float32Array {
  const traits = Object.values(GGML_TYPES).find((t) => t.name === typeName);
  if (!traits) throw new RangeError(`dequantizeGguf: unknown ggml type "${typeName}"`);
  if (!GGUF_DEQUANT_TYPES.includes(typeName)) {
    throw new RangeError(
      `dequantizeGguf: ${typeName} is not supported yet (supported: ${GGUF_DEQUANT_TYPES.join(", ")})`,
    );
  }
  if (!Number.isSafeInteger(numel) || numel < 0 || numel % traits.blockSize !== 0) {
    throw new RangeError(
      `dequantizeGguf: ${typeName} needs a multiple of ${traits.blockSize} values, received ${numel}`,
    );
  }
  const expected = (numel / traits.blockSize) * traits.typeSize;
  if (bytes.byteLength !== expected) {
    throw new RangeError(
      `dequantizeGguf: ${numel} ${typeName} values need ${expected} bytes, received ${bytes.byteLength}`,
    );
  }
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const view = new DataView(aligned.buffer, aligned.byteOffset, aligned.byteLength);
  switch (typeName) {
    case "F32":
      return Float32Array.from({ length: numel }, (_, i) => view.getFloat32(4 * i, true));
    case "F16":
      return f16ToFloat32(new Uint16Array(aligned.slice().buffer));
    case "BF16":
      return bf16ToFloat32(new Uint16Array(aligned.slice().buffer));
    case "Q4_0": {
      const out = new Float32Array(numel);
      for (let b = 0; b < numel / 32; b++) {
        const o = b * 18, d = f16BitsToNumber(view.getUint16(o, true));
        for (let j = 0; j < 16; j++) {
          const q = aligned[o + 2 + j];
          out[b * 32 + j] = ((q & 0xf) - 8) * d;
          out[b * 32 + j + 16] = ((q >> 4) - 8) * d;
        }
      }
      return out;
    }
    case "Q8_0": {
      const out = new Float32Array(numel);
      for (let b = 0; b < numel / 32; b++) {
        const o = b * 34, d = f16BitsToNumber(view.getUint16(o, true));
        for (let j = 0; j < 32; j++) out[b * 32 + j] = view.getInt8(o + 2 + j) * d;
      }
      return out;
    }
    default:
      throw new RangeError(`dequantizeGguf: ${typeName} is not supported`);
  }
}

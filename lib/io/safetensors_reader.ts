/**
 * Lazy safetensors reader: parses and validates the header, then reads each tensor's
 * bytes on demand with seek + read, so checkpoints larger than RAM can be processed
 * one tensor at a time.
 *
 * Layout (huggingface/safetensors README "Format", `tensor.rs` `Metadata::validate`):
 * `[u64 LE header length N][N bytes UTF-8 JSON header][data buffer]`; offsets in the
 * header are relative to the data buffer, which must be covered contiguously.
 * @module
 */
import {
  DTYPES,
  isDtype,
  type SafetensorsDtype,
  shapeSize,
  tensorByteLength,
  type TensorTypedArray,
  toFloat32,
  toTyped,
} from "./dtypes.ts";
import { FormatError } from "./format_error.ts";

/** Largest header accepted, as in the reference implementation (`MAX_HEADER_SIZE`). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where one tensor lies in its file. */
export interface TensorInfo {
  /** Path of the file holding the tensor. */
  file: string;
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Dimensions, row-major (`[]` for a scalar). */
  shape: readonly number[];
  /** Absolute offset of the first byte in the file (`8 + N + begin`). */
  byteOffset: number;
  /** Number of bytes: `product(shape) · itemsize`. */
  byteLength: number;
}

/** Counters of the bytes actually read from disk (header included), for checking laziness. */
export interface ReadStats {
  /** Bytes read so far. */
  bytesRead: number;
  /** Number of positioned reads (one per header part or tensor). */
  reads: number;
}

/** Read access to named tensors, shared by single files and sharded checkpoints. */
export interface TensorReader extends Disposable, AsyncDisposable {
  /** The `__metadata__` string map (`{}` when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensor names in file order (by data offset). */
  names(): string[];
  /** True when the tensor exists. */
  has(name: string): boolean;
  /** Dtype, shape and location of a tensor; throws a `RangeError` for an unknown name. */
  info(name: string): TensorInfo;
  /** Reads exactly the tensor's raw little-endian bytes into a new buffer. */
  readBytes(name: string): Promise<Uint8Array>;
  /** Reads the tensor and converts it to f32 (see `toFloat32`). */
  readFloat32(name: string): Promise<Float32Array>;
  /** Reads the tensor as its natural typed array (F16/BF16 as `Uint16Array` bits). */
  readTyped(name: string): Promise<TensorTypedArray>;
  /** Releases the file handles; later reads throw. Idempotent. */
  close(): void;
}

/** A parsed header: metadata and tensors sorted by data offset. */
interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Validates a header object against a data buffer of `dataLength` bytes that starts at
 * absolute offset `dataStart`; every failure is a {@linkcode FormatError}.
 */
function validateHeader(header: unknown, file: string, dataStart: number, dataLength: number): ParsedHeader {
  const fail = (detail: string, tensor?: string, offset = 8): never => {
    throw new FormatError(detail, { file, tensor, offset });
  };
  if (!isPlainObject(header)) {
    fail(`header must be a JSON object, got ${Array.isArray(header) ? "an array" : String(header)}`);
  }
  const metadata: Record<string, string> = {};
  const found: (TensorInfo & { name: string; begin: number; end: number })[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) fail("__metadata__ must be an object mapping strings to strings");
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (!isPlainObject(entry)) {
      fail(`entry must be an object {dtype, shape, data_offsets}, got ${JSON.stringify(entry)}`, name);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string") fail(`"dtype" must be a string, got ${JSON.stringify(dtype)}`, name);
    if (!isDtype(dtype)) {
      fail(`unknown dtype ${JSON.stringify(dtype)}; this reader knows ${DTYPES.join(", ")}`, name);
    }
    if (!Array.isArray(shape)) {
      fail(`"shape" must be an array of integers, got ${JSON.stringify(shape)}`, name);
    }
    for (const d of shape as unknown[]) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        fail(
          `"shape" ${JSON.stringify(shape)} has dimension ${
            JSON.stringify(d)
          }; dimensions must be non-negative integers`,
          name,
        );
      }
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(`"data_offsets" must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`, name);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`data_offsets [${begin}, ${end}] has begin > end`, name, dataStart + begin);
    if (end > dataLength) {
      fail(
        `data_offsets [${begin}, ${end}] run past the ${dataLength}-byte data buffer (file truncated?)`,
        name,
        dataStart + begin,
      );
    }
    let byteLength: number;
    try {
      byteLength = tensorByteLength(dtype as SafetensorsDtype, shape as number[]);
    } catch (e) {
      return fail((e as Error).message, name);
    }
    if (byteLength !== end - begin) {
      fail(
        `holds ${end - begin} bytes (data_offsets [${begin}, ${end}]) but ${dtype} ${
          JSON.stringify(shape)
        } needs ${byteLength} (${shapeSize(shape as number[])} elements)`,
        name,
        dataStart + begin,
      );
    }
    found.push({
      name,
      file,
      dtype: dtype as SafetensorsDtype,
      shape: Object.freeze([...shape as number[]]),
      byteOffset: dataStart + begin,
      byteLength,
      begin,
      end,
    });
  }
  // The spec requires the buffer to be covered exactly: sorted by offset, each tensor starts where the previous ended.
  found.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: string | undefined;
  for (const t of found) {
    if (t.begin < cursor) {
      fail(
        `data_offsets [${t.begin}, ${t.end}] overlap tensor ${
          JSON.stringify(previous)
        } which ends at ${cursor}`,
        t.name,
        dataStart + t.begin,
      );
    }
    if (t.begin > cursor) {
      fail(
        `gap in the data buffer: bytes [${cursor}, ${t.begin}) belong to no tensor (data must be contiguous)`,
        t.name,
        dataStart + cursor,
      );
    }
    cursor = t.end;
    previous = t.name;
  }
  if (cursor !== dataLength) {
    fail(
      `the data buffer has ${
        dataLength - cursor
      } trailing bytes [${cursor}, ${dataLength}) that belong to no tensor`,
      undefined,
      dataStart + cursor,
    );
  }
  const tensors = new Map<string, TensorInfo>();
  for (const { name, file, dtype, shape, byteOffset, byteLength } of found) {
    tensors.set(name, Object.freeze({ file, dtype, shape, byteOffset, byteLength }));
  }
  return { metadata: Object.freeze(metadata), tensors };
}

/** Header length from the first 8 bytes, checked against the cap and the file size. */
function headerLength(prefix: Uint8Array, file: string, fileSize: number): number {
  if (fileSize < 8) {
    throw new FormatError(
      `file is ${fileSize} bytes, shorter than the 8-byte header length; is it a safetensors file?`,
      { file, offset: 0 },
    );
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new FormatError(
      `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit; the file is corrupt or not safetensors`,
      { file, offset: 0 },
    );
  }
  if (8n + n > BigInt(fileSize)) {
    throw new FormatError(
      `header length ${n} runs past the end of the ${fileSize}-byte file (truncated download?)`,
      { file, offset: 0 },
    );
  }
  return Number(n);
}

function parseHeaderJson(
  bytes: Uint8Array,
  file: string,
  dataStart: number,
  dataLength: number,
): ParsedHeader {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new FormatError(`header is not valid UTF-8 JSON (${(e as Error).message})`, {
      file,
      offset: 8,
      cause: e,
    });
  }
  return validateHeader(header, file, dataStart, dataLength);
}

function unknownTensor(name: string, file: string, names: string[]): RangeError {
  const some = names.slice(0, 5).map((n) => JSON.stringify(n)).join(", ");
  return new RangeError(
    `Tensor ${JSON.stringify(name)} is not in ${file}; it has ${names.length} tensors (${some}${
      names.length > 5 ? ", …" : ""
    }); check names()`,
  );
}

/** An open safetensors file; create it with {@linkcode openSafetensors}. */
export class SafetensorsFile implements TensorReader {
  /** Path the file was opened from. */
  readonly path: string;
  /** The `__metadata__` string map (`{}` when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute offset of the data buffer (`8 + N`). */
  readonly dataOffset: number;
  /** Bytes read from disk so far; proves that reads are lazy. */
  readonly stats: ReadStats;
  #file: Deno.FsFile | undefined;
  #tensors: Map<string, TensorInfo>;
  #queue: Promise<unknown> = Promise.resolve();

  /** @internal Use {@linkcode openSafetensors}. */
  constructor(path: string, file: Deno.FsFile, header: ParsedHeader, dataOffset: number, stats: ReadStats) {
    this.path = path;
    this.#file = file;
    this.metadata = header.metadata;
    this.#tensors = header.tensors;
    this.dataOffset = dataOffset;
    this.stats = stats;
  }

  /** Tensor names in file order (by data offset). */
  names(): string[] {
    return [...this.#tensors.keys()];
  }

  /** True when the file holds a tensor of that name. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Dtype, shape and absolute location of a tensor. */
  info(name: string): TensorInfo {
    const info = this.#tensors.get(name);
    if (!info) throw unknownTensor(name, this.path, this.names());
    return info;
  }

  /** Reads only this tensor's bytes (one seek + read loop). */
  async readBytes(name: string): Promise<Uint8Array> {
    const { byteOffset, byteLength } = this.info(name);
    return await readAt(this.#open(), byteOffset, byteLength, this.stats, this, name);
  }

  /** Reads the tensor converted to f32. */
  async readFloat32(name: string): Promise<Float32Array> {
    return toFloat32(this.info(name).dtype, await this.readBytes(name));
  }

  /** Reads the tensor as its natural typed array. */
  async readTyped(name: string): Promise<TensorTypedArray> {
    return toTyped(this.info(name).dtype, await this.readBytes(name));
  }

  /** Closes the file handle (idempotent). */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #open(): Deno.FsFile {
    if (!this.#file) throw new Error(`${this.path} is closed; open it again with openSafetensors()`);
    return this.#file;
  }

  /** @internal Serializes seek+read pairs so concurrent reads cannot interleave. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }
}

function readAt(
  file: Deno.FsFile,
  position: number,
  length: number,
  stats: ReadStats,
  owner: { exclusive<T>(fn: () => Promise<T>): Promise<T>; path: string } | undefined,
  tensor?: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const job = async () => {
    await file.seek(position, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < length) {
      const n = await file.read(out.subarray(filled));
      if (n === null) {
        throw new FormatError(
          `unexpected end of file after ${filled} of ${length} bytes (file changed on disk?)`,
          {
            file: owner?.path ?? "<file>",
            tensor,
            offset: position + filled,
          },
        );
      }
      filled += n;
    }
    stats.bytesRead += length;
    stats.reads++;
    return out;
  };
  return owner ? owner.exclusive(job) : job();
}

/**
 * Opens a safetensors file and validates its header (8-byte length, header cap, UTF-8
 * JSON object, every entry's dtype / shape / offsets, contiguous coverage of the data
 * buffer). Only the header is read; tensors are read on demand. Every problem with
 * the file is a {@linkcode FormatError} naming the file, tensor and byte offset.
 *
 * @param path the `.safetensors` file.
 * @returns an open {@linkcode SafetensorsFile}; close it (or use `using`).
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "./safetensors_writer.ts";
 * import { openSafetensors } from "./safetensors_reader.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await Deno.writeFile(path, encodeSafetensors([
 *   { name: "w", dtype: "F32", shape: [2], data: new Float32Array([1.5, -2]) },
 * ]));
 * using st = await openSafetensors(path);
 * const w = await st.readFloat32("w");
 * if (st.info("w").dtype !== "F32" || w[0] !== 1.5 || w[1] !== -2) throw new Error("wrong");
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const stats: ReadStats = { bytesRead: 0, reads: 0 };
    const prefix = size >= 8
      ? await readAt(file, 0, 8, stats, { path, exclusive: (f) => f() })
      : new Uint8Array(0);
    const n = headerLength(prefix, path, size);
    const headerBytes = await readAt(file, 8, n, stats, { path, exclusive: (f) => f() });
    const header = parseHeaderJson(headerBytes, path, 8 + n, size - 8 - n);
    return new SafetensorsFile(path, file, header, 8 + n, stats);
  } catch (e) {
    file.close();
    throw e;
  }
}

/** One tensor decoded from an in-memory safetensors buffer. */
export interface DecodedTensor {
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Dimensions. */
  shape: readonly number[];
  /** Raw little-endian bytes (a view into the input buffer). */
  data: Uint8Array;
}

/**
 * Parses a whole safetensors file held in memory (small files, e.g. a fetched adapter),
 * with the same validation as {@linkcode openSafetensors}.
 *
 * @param bytes the complete file.
 * @param file a name used in error messages.
 * @example
 * ```ts
 * import { encodeSafetensors } from "./safetensors_writer.ts";
 * import { decodeSafetensors } from "./safetensors_reader.ts";
 * const bytes = encodeSafetensors([{ name: "b", dtype: "U8", shape: [3], data: new Uint8Array([7, 8, 9]) }], {
 *   metadata: { format: "pt" },
 * });
 * const { metadata, tensors } = decodeSafetensors(bytes);
 * if (metadata.format !== "pt" || tensors.get("b")!.data[2] !== 9) throw new Error("wrong");
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  file = "<memory>",
): { metadata: Readonly<Record<string, string>>; tensors: Map<string, DecodedTensor> } {
  const n = headerLength(bytes, file, bytes.byteLength);
  const header = parseHeaderJson(bytes.subarray(8, 8 + n), file, 8 + n, bytes.byteLength - 8 - n);
  const tensors = new Map<string, DecodedTensor>();
  for (const [name, t] of header.tensors) {
    tensors.set(name, {
      dtype: t.dtype,
      shape: t.shape,
      data: bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength),
    });
  }
  return { metadata: header.metadata, tensors };
}

/**
 * Streaming safetensors writer. The header needs every dtype and shape up front, so
 * entries are collected first; their data may be functions that are called one at a
 * time while writing, so a quantizer can produce tensors without holding them all.
 *
 * Layout as in huggingface/safetensors `tensor.rs` `prepare`: the JSON header is padded
 * with spaces to a multiple of 8 so the data buffer starts 8-byte aligned. Tensors are
 * written in the order given (readers must not assume an order).
 * @module
 */
import { parseDtype, type SafetensorsDtype, tensorByteLength } from "./dtypes.ts";
import { defineOptions, type FieldsOf, record, string } from "../options/schema.ts";

/** Raw tensor contents: any typed array (or DataView) whose bytes are the little-endian data. */
export type TensorData = ArrayBufferView;

/** One tensor to write. */
export interface SafetensorsEntry {
  /** Unique tensor name (not `__metadata__`). */
  name: string;
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Dimensions, row-major (`[]` for a scalar). */
  shape: readonly number[];
  /**
   * Exactly `product(shape) · itemsize` bytes, or a (possibly async) function returning
   * them, called once when this tensor's turn to be written comes.
   */
  data: TensorData | (() => TensorData | Promise<TensorData>);
}

/** Options for {@linkcode writeSafetensors} and {@linkcode encodeSafetensors}. */
export interface WriteSafetensorsOptions {
  /** String map stored as `__metadata__` (e.g. `{ format: "pt" }`); omitted when undefined. @default {undefined} */
  metadata?: Record<string, string>;
}

/** What {@linkcode writeSafetensors} wrote. */
export interface WriteSafetensorsResult {
  /** The final path. */
  path: string;
  /** Size of the file in bytes. */
  fileBytes: number;
  /** Sum of the tensors' byte lengths (the data buffer size). */
  tensorBytes: number;
}

/** The schema of {@linkcode writeSafetensors}'s options. */
export const writeSafetensorsSchema = defineOptions(
  "writeSafetensors",
  {
    metadata: record(
      "String map stored as __metadata__ (safetensors allows only strings).",
      string("A value."),
    ),
  } satisfies FieldsOf<WriteSafetensorsOptions>,
);

function resolveWriteOptions(options: WriteSafetensorsOptions): { metadata?: Record<string, string> } {
  const { metadata } = writeSafetensorsSchema.parse(options);
  return metadata === undefined ? {} : { metadata: metadata as Record<string, string> };
}

/** Bytes of a tensor's data, checked against the size its header entry promises. */
function dataBytes(entry: SafetensorsEntry, value: unknown, expected: number, where: string): Uint8Array {
  if (!ArrayBuffer.isView(value)) {
    throw new TypeError(
      `Tensor ${JSON.stringify(entry.name)} for ${where}: data must be a typed array, got ${typeof value}`,
    );
  }
  if (value.byteLength !== expected) {
    throw new RangeError(
      `Tensor ${JSON.stringify(entry.name)} for ${where}: ${entry.dtype} [${
        entry.shape.join(", ")
      }] needs ${expected} bytes but data has ${value.byteLength}; fix the shape or the data`,
    );
  }
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

/** Validates the entries and builds the 8-byte length + padded JSON header. */
function buildHeader(
  entries: readonly SafetensorsEntry[],
  metadata: Record<string, string> | undefined,
  where: string,
): { header: Uint8Array; sizes: number[] } {
  const parts: string[] = [];
  if (metadata) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  const seen = new Set<string>();
  const sizes: number[] = [];
  let offset = 0;
  for (const entry of entries) {
    if (typeof entry !== "object" || entry === null) {
      throw new TypeError(`Tensor entries for ${where} must be objects, got ${entry}`);
    }
    const { name, dtype, shape, data } = entry;
    if (typeof name !== "string" || name === "" || name === "__metadata__") {
      throw new TypeError(
        `Tensor names for ${where} must be non-empty strings other than "__metadata__", got ${
          JSON.stringify(name)
        }`,
      );
    }
    if (seen.has(name)) {
      throw new RangeError(`Tensor ${JSON.stringify(name)} appears twice in ${where}; names must be unique`);
    }
    seen.add(name);
    if (!Array.isArray(shape)) {
      throw new TypeError(`Tensor ${JSON.stringify(name)} for ${where}: shape must be an array`);
    }
    let size: number;
    try {
      size = tensorByteLength(parseDtype(dtype), shape);
    } catch (e) {
      throw new RangeError(`Tensor ${JSON.stringify(name)} for ${where}: ${(e as Error).message}`);
    }
    if (typeof data !== "function") dataBytes(entry, data, size, where); // fail before writing anything
    parts.push(
      `${JSON.stringify(name)}:${JSON.stringify({ dtype, shape, data_offsets: [offset, offset + size] })}`,
    );
    sizes.push(size);
    offset += size;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, sizes };
}

/**
 * Encodes tensors into a complete safetensors file in memory (for small files). Data
 * functions must be synchronous here.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "./safetensors_writer.ts";
 * const bytes = encodeSafetensors([{ name: "x", dtype: "I32", shape: [2], data: new Int32Array([1, -1]) }]);
 * const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
 * if (n % 8 !== 0 || bytes.byteLength !== 8 + n + 8) throw new Error("wrong layout");
 * ```
 */
export function encodeSafetensors(
  tensors: Iterable<SafetensorsEntry>,
  options: WriteSafetensorsOptions = {},
): Uint8Array {
  const { metadata } = resolveWriteOptions(options);
  const entries = [...tensors];
  const { header, sizes } = buildHeader(entries, metadata, "encodeSafetensors()");
  const out = new Uint8Array(header.byteLength + sizes.reduce((a, b) => a + b, 0));
  out.set(header, 0);
  let offset = header.byteLength;
  entries.forEach((entry, i) => {
    const value = typeof entry.data === "function" ? entry.data() : entry.data;
    if (value instanceof Promise) {
      throw new TypeError(
        `Tensor ${
          JSON.stringify(entry.name)
        }: encodeSafetensors() needs synchronous data; use writeSafetensors() for async data`,
      );
    }
    out.set(dataBytes(entry, value, sizes[i], "encodeSafetensors()"), offset);
    offset += sizes[i];
  });
  return out;
}

/** Removes `<path>.tmp-*` files left by writes that were killed (the next write to `path` cleans up). */
async function removeStaleTemporaries(path: string): Promise<void> {
  const i = path.lastIndexOf("/");
  const dir = i < 0 ? "." : path.slice(0, i) || "/", prefix = `${path.slice(i + 1)}.tmp-`;
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.startsWith(prefix)) await Deno.remove(`${dir}/${e.name}`).catch(() => {});
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += await file.write(bytes.subarray(done));
}

/**
 * Writes a safetensors file tensor by tensor. Everything is validated first (unique
 * names, known dtypes, shapes, eager data lengths); lazily produced data is checked when
 * pulled. The file is written to `<path>.tmp-<random>`, fsynced and renamed at the end, so
 * an error never corrupts an existing file at `path` and leaves no temporary file behind.
 * (A kill can leave the temporary file; folder saves use `writeDirAtomic`, which cleans up.)
 *
 * @param path destination `.safetensors` file.
 * @param tensors an array or (async) iterable of entries; all entries are collected
 *   before writing (the header needs every shape), data is pulled one tensor at a time.
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors_writer.ts";
 * import { openSafetensors } from "./safetensors_reader.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [
 *   { name: "a", dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0xc040]) },
 *   { name: "b", dtype: "F32", shape: [], data: async () => new Float32Array([7]) },
 * ], { metadata: { format: "pt" } });
 * using st = await openSafetensors(path);
 * const a = await st.readFloat32("a");
 * if (a[1] !== -3 || (await st.readFloat32("b"))[0] !== 7 || st.metadata.format !== "pt") throw new Error("wrong");
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<SafetensorsEntry> | AsyncIterable<SafetensorsEntry>,
  options: WriteSafetensorsOptions = {},
): Promise<WriteSafetensorsResult> {
  const { metadata } = resolveWriteOptions(options);
  const entries: SafetensorsEntry[] = [];
  for await (const entry of tensors) entries.push(entry);
  const { header, sizes } = buildHeader(entries, metadata, path);
  await removeStaleTemporaries(path);
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  const file = await Deno.open(tmp, { write: true, createNew: true });
  let open = true;
  try {
    await writeAll(file, header);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      const value = typeof entry.data === "function" ? await entry.data() : entry.data;
      await writeAll(file, dataBytes(entry, value, sizes[i], path));
    }
    await file.sync(); // durable before the rename makes it visible
    file.close();
    open = false;
    await Deno.rename(tmp, path);
  } catch (e) {
    if (open) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  const tensorBytes = sizes.reduce((a, b) => a + b, 0);
  return { path, fileBytes: header.byteLength + tensorBytes, tensorBytes };
}

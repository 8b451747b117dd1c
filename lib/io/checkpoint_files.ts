/**
 * Hugging Face checkpoint directories: a single `model.safetensors`, or shards
 * `model-00001-of-0000N.safetensors` listed in `model.safetensors.index.json`
 * (`{"metadata": {"total_size": …}, "weight_map": {tensor: shard file}}`), read through
 * the same {@linkcode TensorReader} interface as a single file.
 * @module
 */
import type { TensorTypedArray } from "./dtypes.ts";
import { tensorByteLength } from "./dtypes.ts";
import { FormatError } from "./format_error.ts";
import {
  openSafetensors,
  type SafetensorsFile,
  type TensorInfo,
  type TensorReader,
} from "./safetensors_reader.ts";
import { type SafetensorsEntry, writeSafetensors } from "./safetensors_writer.ts";
import { isFile, refuseInterruptedSave } from "./atomic_dir.ts";
import { defineOptions, type FieldsOf, integer, record, string } from "../options/schema.ts";

/** File name of a single-file checkpoint. */
export const SINGLE_FILE_NAME = "model.safetensors";
/** File name of the shard index. */
export const INDEX_FILE_NAME = "model.safetensors.index.json";

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** A checkpoint opened with {@linkcode openCheckpoint}: one or more safetensors files. */
export class Checkpoint implements TensorReader {
  /** The safetensors files, in shard order. */
  readonly files: readonly string[];
  /** `__metadata__` of the first file (`{}` when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The index's `metadata` object (e.g. `total_size`), or `undefined` for a single file. */
  readonly indexMetadata: Readonly<Record<string, unknown>> | undefined;
  #shards: SafetensorsFile[];
  #owner: Map<string, SafetensorsFile>;

  /** @internal Use {@linkcode openCheckpoint}. */
  constructor(
    shards: SafetensorsFile[],
    owner: Map<string, SafetensorsFile>,
    indexMetadata: Record<string, unknown> | undefined,
  ) {
    this.#shards = shards;
    this.#owner = owner;
    this.files = Object.freeze(shards.map((s) => s.path));
    this.metadata = shards[0]?.metadata ?? {};
    this.indexMetadata = indexMetadata;
  }

  /** Tensor names: shard by shard, in file order within each. */
  names(): string[] {
    return [...this.#owner.keys()];
  }

  /** True when the checkpoint holds that tensor. */
  has(name: string): boolean {
    return this.#owner.has(name);
  }

  /** Dtype, shape, file and absolute location of a tensor. */
  info(name: string): TensorInfo {
    return this.#shard(name).info(name);
  }

  /** Reads only this tensor's bytes from its shard. */
  async readBytes(name: string): Promise<Uint8Array> {
    return await this.#shard(name).readBytes(name);
  }

  /** Reads the tensor converted to f32. */
  async readFloat32(name: string): Promise<Float32Array> {
    return await this.#shard(name).readFloat32(name);
  }

  /** Reads the tensor as its natural typed array. */
  async readTyped(name: string): Promise<TensorTypedArray> {
    return await this.#shard(name).readTyped(name);
  }

  /** Total bytes read from disk across shards. */
  get bytesRead(): number {
    return this.#shards.reduce((sum, s) => sum + s.stats.bytesRead, 0);
  }

  /** Closes every shard (idempotent). */
  close(): void {
    for (const s of this.#shards) s.close();
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

  #shard(name: string): SafetensorsFile {
    const shard = this.#owner.get(name);
    if (shard) return shard;
    const names = this.names();
    throw new RangeError(
      `Tensor ${JSON.stringify(name)} is not in checkpoint ${this.files[0] ?? ""}${
        this.files.length > 1 ? ` (+${this.files.length - 1} shards)` : ""
      }; it has ${names.length} tensors; check names()`,
    );
  }
}

/** Parses and checks `model.safetensors.index.json`. */
async function readIndex(
  indexPath: string,
): Promise<{ weightMap: Map<string, string>; metadata: Record<string, unknown> | undefined }> {
  let index: unknown;
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw e;
    throw new FormatError(`index is not valid JSON (${(e as Error).message})`, { file: indexPath, cause: e });
  }
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(index) || !isObject(index.weight_map)) {
    throw new FormatError(
      `index must be an object with a "weight_map" object mapping tensor names to shard files`,
      {
        file: indexPath,
      },
    );
  }
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(index.weight_map)) {
    if (
      typeof file !== "string" || file === "" || file.startsWith("/") || file.split(/[\\/]/).includes("..")
    ) {
      throw new FormatError(
        `weight_map entry must be a shard file name inside the directory, got ${JSON.stringify(file)}`,
        {
          file: indexPath,
          tensor: name,
        },
      );
    }
    weightMap.set(name, file);
  }
  const metadata = isObject(index.metadata) ? index.metadata : undefined;
  return { weightMap, metadata };
}

/**
 * Opens a Hugging Face checkpoint: a directory holding `model.safetensors` (preferred,
 * as transformers does) or `model.safetensors.index.json` plus its shards; a path to
 * a `.safetensors` file or an index file works too. Shards must all exist and hold
 * every tensor the index assigns to them. Only headers are read.
 *
 * @param path the model directory, a `.safetensors` file or an `.index.json` file.
 * @example
 * ```ts
 * import { openCheckpoint } from "./checkpoint_files.ts";
 * import { writeSafetensors } from "./safetensors_writer.ts";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/model.safetensors`, [
 *   { name: "model.norm.weight", dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0x4000]) },
 * ]);
 * using ckpt = await openCheckpoint(dir);
 * const norm = await ckpt.readFloat32("model.norm.weight");
 * if (ckpt.names().length !== 1 || ckpt.info("model.norm.weight").dtype !== "BF16" || norm[1] !== 2) {
 *   throw new Error("wrong");
 * }
 * ```
 */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  refuseInterruptedSave(path, "openCheckpoint");
  let indexPath: string | undefined;
  let singlePath: string | undefined;
  if (await isFile(path)) {
    if (path.endsWith(".json")) indexPath = path;
    else singlePath = path;
  } else if (await isFile(join(path, SINGLE_FILE_NAME))) singlePath = join(path, SINGLE_FILE_NAME);
  else if (await isFile(join(path, INDEX_FILE_NAME))) indexPath = join(path, INDEX_FILE_NAME);
  else {
    throw new Deno.errors.NotFound(
      `No checkpoint in ${path}: expected ${SINGLE_FILE_NAME} or ${INDEX_FILE_NAME}; pass the model directory`,
    );
  }

  if (singlePath !== undefined) {
    const file = await openSafetensors(singlePath);
    return new Checkpoint([file], new Map(file.names().map((n) => [n, file])), undefined);
  }

  const index = indexPath!;
  const { weightMap, metadata } = await readIndex(index);
  const shardNames = [...new Set(weightMap.values())].sort();
  const dir = dirname(index);
  for (const shard of shardNames) {
    if (!(await isFile(join(dir, shard)))) {
      const tensor = [...weightMap].find(([, f]) => f === shard)![0];
      throw new FormatError(
        `lists shard ${JSON.stringify(shard)} (for ${JSON.stringify(tensor)} and others) but ${
          join(dir, shard)
        } does not exist; download the missing shard`,
        { file: index, tensor },
      );
    }
  }
  const shards: SafetensorsFile[] = [];
  try {
    const byFile = new Map<string, SafetensorsFile>();
    for (const shard of shardNames) {
      const file = await openSafetensors(join(dir, shard));
      shards.push(file);
      byFile.set(shard, file);
    }
    for (const [name, shard] of weightMap) {
      if (!byFile.get(shard)!.has(name)) {
        throw new FormatError(`the index assigns this tensor to this shard, but the shard does not hold it`, {
          file: join(dir, shard),
          tensor: name,
        });
      }
    }
    for (const [shard, file] of byFile) {
      const unlisted = file.names().find((name) => !weightMap.has(name));
      if (unlisted !== undefined) {
        throw new FormatError(
          `the shard holds this tensor but ${index} does not list it (index and shards from different ` +
            "saves?); download the matching index or shards",
          { file: join(dir, shard), tensor: unlisted },
        );
      }
    }
    const owner = new Map<string, SafetensorsFile>();
    for (const file of shards) {
      for (const name of file.names()) if (byFile.get(weightMap.get(name)!) === file) owner.set(name, file);
    }
    return new Checkpoint(shards, owner, metadata);
  } catch (e) {
    for (const s of shards) s.close();
    throw e;
  }
}

/** Options for {@linkcode writeShardedSafetensors}. */
export interface WriteShardedOptions {
  /** Largest data size of one shard in bytes; a bigger tensor gets a shard of its own. @default {5_000_000_000} */
  maxShardBytes?: number;
  /** `__metadata__` written into every shard. @default {{ format: "pt" }} */
  metadata?: Record<string, string>;
}

/** What {@linkcode writeShardedSafetensors} wrote. */
export interface WriteShardedResult {
  /** Paths of the safetensors files written, in order. */
  files: string[];
  /** The index path, or `undefined` when a single `model.safetensors` was written. */
  index: string | undefined;
  /** Sum of tensor byte lengths (`metadata.total_size` of the index). */
  totalSize: number;
}

/** The schema of {@linkcode writeShardedSafetensors}'s options. */
export const writeShardedSchema = defineOptions(
  "writeShardedSafetensors",
  {
    maxShardBytes: integer("Largest data size of one shard in bytes.", { min: 1, default: 5_000_000_000 }),
    metadata: record("__metadata__ written into every shard.", string("A value."), {
      default: { format: "pt" },
    }),
  } satisfies FieldsOf<WriteShardedOptions>,
);

/**
 * Writes a checkpoint directory as transformers `save_pretrained` does: a single
 * `model.safetensors` when everything fits in one shard, otherwise
 * `model-0000i-of-0000N.safetensors` (greedy, in the order given) plus
 * `model.safetensors.index.json`, written last. Every file is written atomically.
 *
 * @param dir destination directory (created if missing).
 * @param tensors entries as for `writeSafetensors` (data may be lazy functions).
 * @example
 * ```ts
 * import { openCheckpoint, writeShardedSafetensors } from "./checkpoint_files.ts";
 * const dir = await Deno.makeTempDir();
 * const row = (v: number) => new Float32Array([v, v, v, v]);
 * const result = await writeShardedSafetensors(dir, [
 *   { name: "a", dtype: "F32", shape: [4], data: row(1) },
 *   { name: "b", dtype: "F32", shape: [4], data: () => row(2) },
 * ], { maxShardBytes: 16 });
 * using ckpt = await openCheckpoint(dir);
 * if (result.files.length !== 2 || (await ckpt.readFloat32("b"))[3] !== 2) throw new Error("wrong");
 * ```
 */
export async function writeShardedSafetensors(
  dir: string,
  tensors: Iterable<SafetensorsEntry> | AsyncIterable<SafetensorsEntry>,
  options: WriteShardedOptions = {},
): Promise<WriteShardedResult> {
  const { maxShardBytes, metadata } = writeShardedSchema.parse(options) as {
    maxShardBytes: number;
    metadata: Record<string, string>;
  };
  const entries: SafetensorsEntry[] = [];
  for await (const entry of tensors) entries.push(entry);

  const groups: SafetensorsEntry[][] = [];
  let current: SafetensorsEntry[] = [];
  let currentBytes = 0;
  let totalSize = 0;
  const seen = new Set<string>();
  for (const entry of entries) {
    if (seen.has(entry?.name)) {
      throw new RangeError(
        `Tensor ${JSON.stringify(entry.name)} appears twice in ${dir}; names must be unique`,
      );
    }
    seen.add(entry?.name);
    let size: number;
    try {
      size = tensorByteLength(entry.dtype, entry.shape);
    } catch (e) {
      throw new RangeError(`Tensor ${JSON.stringify(entry?.name)} for ${dir}: ${(e as Error).message}`);
    }
    if (current.length > 0 && currentBytes + size > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(entry);
    currentBytes += size;
    totalSize += size;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);

  await Deno.mkdir(dir, { recursive: true });
  if (groups.length === 1) {
    const path = join(dir, SINGLE_FILE_NAME);
    await writeSafetensors(path, groups[0], { metadata });
    await removeIfPresent(join(dir, INDEX_FILE_NAME)); // a stale index would describe other files
    return { files: [path], index: undefined, totalSize };
  }
  const n = String(groups.length).padStart(5, "0");
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < groups.length; i++) {
    const name = `model-${String(i + 1).padStart(5, "0")}-of-${n}.safetensors`;
    const path = join(dir, name);
    await writeSafetensors(path, groups[i], { metadata });
    files.push(path);
    for (const entry of groups[i]) weightMap[entry.name] = name;
  }
  const sorted = Object.fromEntries(
    Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  const index = join(dir, INDEX_FILE_NAME);
  const tmp = `${index}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(
    tmp,
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sorted }, null, 2) + "\n",
  );
  await Deno.rename(tmp, index);
  await removeIfPresent(join(dir, SINGLE_FILE_NAME)); // openCheckpoint() would prefer a stale single file
  return { files, index, totalSize };
}

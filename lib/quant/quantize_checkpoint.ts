/**
 * Quantizing a Hugging Face Llama checkpoint directory to the bitsandbytes 4-bit layout that
 * transformers `save_pretrained` writes (FORMATS.md §2), streaming tensor by tensor.
 *
 * Why a spool file: the safetensors header must list every tensor's shape before any data, and the
 * length of each `quant_state.bitsandbytes__*` JSON tensor depends on the data (`nested_offset` is the
 * mean absmax, printed with Python's float repr). So the attention/MLP weights are read and quantized
 * first, one at a time, and their packed tensors appended to a spool file on disk; then the output is
 * written with lazy data functions that read the spool back or copy the other tensors' bytes from the
 * input. Every input tensor is read exactly once and at most one weight is held in memory.
 * @module
 */

import { openCheckpoint, writeShardedSafetensors } from "../io/checkpoint_files.ts";
import { checkNotRelabelledBf16 } from "../io/weight_dtype_check.ts";
import { pathExists, recoverInterruptedSave, writeDirAtomic } from "../io/atomic_dir.ts";
import type { SafetensorsDtype } from "../io/dtypes.ts";
import type { SafetensorsEntry } from "../io/safetensors_writer.ts";
import { type Quant4bitState, quantize4bit, WEIGHT_DTYPES, type WeightDtype } from "./blockwise_4bit.ts";
import { bnbQuantizationConfig, bnbTensors } from "./bnb_format.ts";
import { bitsPerParam } from "./storage.ts";
import { describe } from "./_options.ts";
import { array, boolean, defineOptions, type FieldsOf, integer, oneOf, string } from "../options/schema.ts";
import {
  QUANTIZE_RENAMED,
  quantizeField,
  type QuantizeOption,
  type ResolvedQuantize,
} from "./quantize_option.ts";

/** Options of {@linkcode quantizeCheckpoint}. */
export interface QuantizeCheckpointOptions {
  /**
   * The 4-bit format: `"nf4"`, `"fp4"` or `{ type, doubleQuant, blocksize }` (the same option as
   * `loadModel`'s; double quantization on and blocksize 64 unless given). @default "nf4"
   */
  quantize?: QuantizeOption;
  /** Module paths containing any of these substrings stay unquantized (`llm_int8_skip_modules`). @default ["lm_head"] */
  skipModules?: string[];
  /** `bnb_4bit_compute_dtype` recorded in `config.json`. @default the dtype of the quantized weights */
  computeDtype?: WeightDtype;
  /** Replace a non-empty `outDir`. @default false */
  overwrite?: boolean;
  /** Largest output shard in bytes (transformers' `max_shard_size`). @default 5_000_000_000 */
  maxShardBytes?: number;
}

/** What {@linkcode quantizeCheckpoint} wrote. */
export interface QuantizeCheckpointResult {
  /** The output directory. */
  outDir: string;
  /** Sum of the input tensors' bytes. */
  inputTensorBytes: number;
  /** Sum of the output tensors' bytes. */
  outputTensorBytes: number;
  /** Bytes read from the input safetensors files (headers included): about `inputTensorBytes`, once. */
  bytesRead: number;
  /** Number of weights quantized. */
  quantizedWeights: number;
  /** Parameters in the quantized weights. */
  quantizedParams: number;
  /** Bits per quantized parameter, packed codes plus block constants (≈ 4.127 for NF4 + double quant). */
  bitsPerParam: number;
  /** Files copied besides the tensors (tokenizer, generation config). */
  copiedFiles: string[];
}

/** The schema of {@linkcode quantizeCheckpoint}'s options. */
export const quantizeCheckpointSchema = defineOptions(
  "quantizeCheckpoint",
  {
    quantize: quantizeField('The 4-bit format: "nf4", "fp4" or { type, doubleQuant, blocksize }.'),
    skipModules: array(
      "Module paths containing any of these substrings stay unquantized (llm_int8_skip_modules).",
      string("A name.", { nonEmpty: true }),
      { default: ["lm_head"] },
    ),
    computeDtype: oneOf(
      "bnb_4bit_compute_dtype recorded in config.json (default: the weights' dtype).",
      WEIGHT_DTYPES,
    ),
    overwrite: boolean("Replace a non-empty outDir.", { default: false }),
    maxShardBytes: integer("Largest output shard in bytes (transformers' max_shard_size).", { min: 1 }),
  } satisfies FieldsOf<QuantizeCheckpointOptions>,
  { renamed: QUANTIZE_RENAMED },
);

/** Attention and MLP projections, the weights transformers replaces with `Linear4bit`. */
const LINEAR_WEIGHT = /^model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+_proj\.weight$/;

/** Files carried over unchanged: tokenizer and generation settings. */
const COPIED =
  /^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|generation_config\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(jinja|json))$/;

const SOURCE_DTYPE: Partial<Record<SafetensorsDtype, WeightDtype>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

function resolveOptions(options: QuantizeCheckpointOptions) {
  const o = quantizeCheckpointSchema.parse(options);
  return { ...o, quantize: o.quantize as ResolvedQuantize };
}

async function readConfig(inDir: string): Promise<Record<string, unknown>> {
  const path = `${inDir}/config.json`;
  let config: unknown;
  try {
    config = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(
        `quantizeCheckpoint: ${path} does not exist; pass an HF model directory.`,
      );
    }
    throw new SyntaxError(`quantizeCheckpoint: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new TypeError(`quantizeCheckpoint: ${path} must hold a JSON object.`);
  }
  const qc = (config as Record<string, unknown>).quantization_config as Record<string, unknown> | undefined;
  if (qc !== undefined && qc !== null) {
    throw new RangeError(
      `quantizeCheckpoint: ${inDir} is already quantized (quant_method ${
        describe(qc.quant_method)
      }); pass the full-precision checkpoint.`,
    );
  }
  return config as Record<string, unknown>;
}

/** True when `dir` exists and holds at least one entry. */
async function nonEmpty(dir: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(dir)) return true;
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A spooled tensor: where its bytes lie in the spool file. */
interface Spooled {
  entry: Omit<SafetensorsEntry, "data">;
  offset: number;
  length: number;
}

async function readSpool(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const n = await file.read(out.subarray(done));
    if (n === null) throw new Error(`quantizeCheckpoint: spool file ended early at byte ${offset + done}`);
    done += n;
  }
  return out;
}

/**
 * Quantizes the attention/MLP linear weights (`model.layers.N.(self_attn|mlp).*_proj.weight`) of an HF
 * checkpoint directory into the bitsandbytes 4-bit tensors transformers saves (packed U8 codes, absmax,
 * quant_map, nested_* with double quantization, and the `quant_state.bitsandbytes__<type>` JSON), keeps
 * every other tensor byte for byte in its original dtype, writes `config.json` with a
 * `quantization_config` and copies the tokenizer and generation files.
 *
 * The input is streamed one tensor at a time. The output is assembled in a sibling temporary directory,
 * fsynced and renamed into place (`writeDirAtomic`), so a failure or a kill never leaves a half-written
 * `outDir`; leftovers of a killed run are removed by the next run into the same place.
 *
 * @param inDir full-precision HF model directory (`config.json` + `model.safetensors` or shards).
 * @param outDir destination; must be missing or empty unless `overwrite` is set.
 * @param options quantization settings.
 * @returns sizes and counts of what was written.
 * @example
 * ```ts
 * import { quantizeCheckpoint } from "./quantize_checkpoint.ts";
 * import { writeSafetensors } from "../io/safetensors_writer.ts";
 * import { openCheckpoint } from "../io/checkpoint_files.ts";
 * const inDir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${inDir}/config.json`, JSON.stringify({ model_type: "llama" }));
 * await writeSafetensors(`${inDir}/model.safetensors`, [
 *   { name: "model.layers.0.mlp.up_proj.weight", dtype: "F32", shape: [4, 32], data: new Float32Array(128).fill(0.5) },
 *   { name: "model.norm.weight", dtype: "F32", shape: [32], data: new Float32Array(32).fill(1) },
 * ]);
 * const outDir = `${inDir}-nf4`;
 * const r = await quantizeCheckpoint(inDir, outDir);
 * using ckpt = await openCheckpoint(outDir);
 * if (ckpt.info("model.layers.0.mlp.up_proj.weight").dtype !== "U8") throw new Error("not packed");
 * if (!ckpt.has("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4")) throw new Error("no state");
 * if (ckpt.info("model.norm.weight").dtype !== "F32" || r.quantizedWeights !== 1) throw new Error("copy");
 * const config = JSON.parse(await Deno.readTextFile(`${outDir}/config.json`));
 * if (config.quantization_config.bnb_4bit_quant_type !== "nf4") throw new Error("config");
 * ```
 */
export async function quantizeCheckpoint(
  inDir: string,
  outDir: string,
  options: QuantizeCheckpointOptions = {},
): Promise<QuantizeCheckpointResult> {
  const o = resolveOptions(options);
  const config = await readConfig(inDir);
  const outAbs = await Deno.realPath(inDir).then(async (inReal) => {
    if ((await pathExists(outDir)) && (await Deno.realPath(outDir)) === inReal) {
      throw new RangeError(`quantizeCheckpoint: outDir is the input directory ${inDir}; choose another.`);
    }
    return outDir.replace(/\/+$/, "");
  });
  await recoverInterruptedSave(outAbs); // leftovers of a killed run into the same place
  if (!o.overwrite && (await nonEmpty(outAbs))) {
    throw new Deno.errors.AlreadyExists(
      `quantizeCheckpoint: ${outAbs} is not empty; choose another directory or pass overwrite: true.`,
    );
  }
  const ckpt = await openCheckpoint(inDir);
  let spool: Deno.FsFile | undefined;
  let result: QuantizeCheckpointResult | undefined;
  try {
    await writeDirAtomic(outAbs, async (tmp) => {
      const names = ckpt.names();
      const skipped = (name: string) =>
        o.skipModules.some((s) => name.slice(0, -".weight".length).includes(s));
      const toQuantize = names.filter((n) =>
        LINEAR_WEIGHT.test(n) && ckpt.info(n).shape.length === 2 && !skipped(n)
      );
      const quantSet = new Set(toQuantize);
      // Phase 1: quantize each linear weight as it is read, spooling its bnb tensors to disk.
      spool = await Deno.open(`${tmp}/.spool`, { read: true, write: true, createNew: true });
      const spooled = new Map<string, Spooled[]>();
      let spoolEnd = 0, quantizedParams = 0, quantizedBits = 0;
      let weightDtype: WeightDtype | undefined;
      for (const name of toQuantize) {
        const info = ckpt.info(name);
        const dtype = SOURCE_DTYPE[info.dtype];
        if (dtype === undefined) {
          throw new TypeError(
            `quantizeCheckpoint: "${name}" in ${info.file} is ${info.dtype}; only F32, F16 and BF16 weights can be quantized.`,
          );
        }
        weightDtype ??= dtype;
        const values = await ckpt.readFloat32(name);
        checkNotRelabelledBf16(name, info, values); // BF16 bits labelled F16 would quantize garbage
        let state: Quant4bitState;
        try {
          state = quantize4bit(values, {
            quantize: o.quantize,
            shape: [...info.shape],
            dtype,
          });
        } catch (e) {
          throw new RangeError(
            `quantizeCheckpoint: tensor "${name}" in ${info.file}: ${(e as Error).message}`,
          );
        }
        const parts: Spooled[] = [];
        for (const e of bnbTensors(name, state)) {
          const bytes = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
          await spool.seek(spoolEnd, Deno.SeekMode.Start);
          let done = 0;
          while (done < bytes.length) done += await spool.write(bytes.subarray(done));
          parts.push({
            entry: { name: e.name, dtype: e.dtype as SafetensorsDtype, shape: e.shape },
            offset: spoolEnd,
            length: bytes.length,
          });
          spoolEnd += bytes.length;
        }
        quantizedBits += bitsPerParam(state) * state.numel;
        quantizedParams += state.numel;
        spooled.set(name, parts);
      }
      // Phase 2: write the output in the input's tensor order; other tensors are copied byte for byte.
      const sp = spool;
      const entries: SafetensorsEntry[] = [];
      let inputTensorBytes = 0;
      for (const name of names) {
        const info = ckpt.info(name);
        inputTensorBytes += info.byteLength;
        if (quantSet.has(name)) {
          for (const p of spooled.get(name)!) {
            entries.push({ ...p.entry, data: () => readSpool(sp, p.offset, p.length) });
          }
        } else {
          entries.push({ name, dtype: info.dtype, shape: [...info.shape], data: () => ckpt.readBytes(name) });
        }
      }
      const written = await writeShardedSafetensors(tmp, entries, {
        metadata: { ...ckpt.metadata, format: "pt" },
        ...(o.maxShardBytes === undefined ? {} : { maxShardBytes: o.maxShardBytes }),
      });
      spool.close();
      spool = undefined;
      await Deno.remove(`${tmp}/.spool`);
      const bytesRead = ckpt.bytesRead;

      const torchDtype = typeof config.torch_dtype === "string" ? config.torch_dtype : undefined;
      const computeDtype = o.computeDtype ??
        weightDtype ??
        (WEIGHT_DTYPES.includes(torchDtype as WeightDtype) ? torchDtype as WeightDtype : "bfloat16");
      const quantizationConfig = bnbQuantizationConfig({
        quantize: o.quantize,
        computeDtype,
        skipModules: o.skipModules,
      });
      await Deno.writeTextFile(
        `${tmp}/config.json`,
        JSON.stringify({ ...config, quantization_config: quantizationConfig }, null, 2) + "\n",
      );
      const copiedFiles: string[] = [];
      for await (const e of Deno.readDir(inDir)) {
        if (e.isFile && COPIED.test(e.name)) {
          await Deno.copyFile(`${inDir}/${e.name}`, `${tmp}/${e.name}`);
          copiedFiles.push(e.name);
        }
      }
      result = {
        outDir: outAbs,
        inputTensorBytes,
        outputTensorBytes: written.totalSize,
        bytesRead,
        quantizedWeights: toQuantize.length,
        quantizedParams,
        bitsPerParam: quantizedParams === 0 ? 0 : quantizedBits / quantizedParams,
        copiedFiles: copiedFiles.sort(),
      };
    });
    return result!;
  } finally {
    spool?.close();
    ckpt.close();
  }
}

/**
 * Building Llama-family models from HF checkpoint directories, from scratch, and
 * saving them back in HF layout.
 * @module
 */
import { ensureEngine } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { openCheckpoint } from "../io/checkpoint_files.ts";
import { recoverInterruptedSave, refuseInterruptedSave } from "../io/atomic_dir.ts";
import type { TensorReader } from "../io/safetensors_reader.ts";
import { type LlamaConfig, parseLlamaConfig } from "./llama_config.ts";
import { BLOCK_LINEAR_NAMES, type BlockLinears, linearPath, LlamaBlock } from "./llama_block.ts";
import { DenseLinear, type LinearFactory } from "./linear.ts";
import { LlamaForCausalLM } from "./llama.ts";
import { RMSNorm } from "./rms_norm.ts";
import { Bias } from "./bias.ts";
import { splitFusedReader } from "./fused_linears.ts";
import { checkNotRelabelledBf16, checkWeightDtype } from "../io/weight_dtype_check.ts";
import { array, defineOptions, type FieldsOf, oneOf, string } from "../options/schema.ts";
import { QUANTIZE_RENAMED, quantizeField, type QuantizeOption } from "../quant/quantize_option.ts";
import { checkComputeDtype, COMPUTE_DTYPES, type ComputeDtype } from "../quant/compute_dtype.ts";

/** Options for {@linkcode loadModel}. */
export interface LoadModelOptions {
  /**
   * Quantize the attention and MLP linear weights while loading: `"nf4"`, `"fp4"` or
   * `{ type, doubleQuant, blocksize }` (double quantization on and blocksize 64 unless given).
   * @default {false}
   */
  quantize?: QuantizeOption | false;
  /** Module names (substrings) kept in full precision when quantizing. @default {["lm_head"]} */
  skipModules?: string[];
  /**
   * Precision of the 4-bit layers' matmuls (bitsandbytes' `bnb_4bit_compute_dtype`): `"float32"`, or
   * `"bfloat16"` (native AVX512-BF16 GEMM, about twice as fast; wasm backend). See `model.setComputeDtype()`.
   * @default {"float32"}
   */
  computeDtype?: ComputeDtype;
}

/** The schema of {@linkcode loadModel}'s options. */
export const loadModelSchema = defineOptions(
  "loadModel",
  {
    quantize: quantizeField(
      'Quantize the linear weights while loading: "nf4", "fp4", { type, doubleQuant, blocksize } or false.',
      {
        off: true,
      },
    ),
    skipModules: array(
      "Module names (substrings) kept in full precision when quantizing.",
      string("A name.", {
        nonEmpty: true,
      }),
      { default: ["lm_head"] },
    ),
    computeDtype: oneOf(
      'Precision of the 4-bit layers\' matmuls: "float32" or "bfloat16" (bitsandbytes\' bnb_4bit_compute_dtype).',
      COMPUTE_DTYPES,
      { default: "float32" },
    ),
  } satisfies FieldsOf<LoadModelOptions>,
  { renamed: QUANTIZE_RENAMED },
);

/** Builds the linear layer for one weight (defined in `linear.ts`, next to `Linear`). */
export type { LinearFactory };

/** Reads and validates `config.json` of an HF model directory. */
export async function readModelConfig(dir: string): Promise<LlamaConfig> {
  const path = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`Cannot read ${path}: ${(e as Error).message}. Is "${dir}" an HF model directory?`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new TypeError(`${path} must hold a JSON object`);
  }
  return { ...parseLlamaConfig(raw as Record<string, unknown>, path), sourceDir: dir };
}

async function readTensor(reader: TensorReader, name: string, shape: number[]): Promise<tf.Tensor> {
  if (!reader.has(name)) {
    throw new RangeError(`Checkpoint has no tensor "${name}" (expected shape [${shape}])`);
  }
  const info = reader.info(name);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new TypeError(`Tensor "${name}" in ${info.file} has shape [${info.shape}], expected [${shape}]`);
  }
  checkWeightDtype(name, info); // BF16 bits labelled I16 and the like
  const data = await reader.readFloat32(name);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new RangeError(`Tensor "${name}" in ${info.file} holds a non-finite value at element ${i}`);
    }
  }
  checkNotRelabelledBf16(name, info, data);
  return tf.tensor(data, shape, "float32");
}

/** The dense factory: reads the weight as fp32 into a trainable {@linkcode DenseLinear}. */
export const denseLinearFactory: LinearFactory = async (name, reader, shape) =>
  new DenseLinear(name, (await readTensor(reader, `${name}.weight`, shape)) as tf.Tensor2D);

/** Expected shape of each linear weight `[out, in]`. */
export function linearShape(config: LlamaConfig, name: keyof BlockLinears): [number, number] {
  const D = config.hiddenSize, F = config.intermediateSize;
  const q = config.numAttentionHeads * config.headDim, kv = config.numKeyValueHeads * config.headDim;
  switch (name) {
    case "q_proj":
      return [q, D];
    case "k_proj":
    case "v_proj":
      return [kv, D];
    case "o_proj":
      return [D, q];
    case "gate_proj":
    case "up_proj":
      return [F, D];
    case "down_proj":
      return [D, F];
  }
}

/**
 * Assembles a model from a tensor reader, one block at a time (each weight is read
 * from disk only when its layer is built).
 */
export async function buildModel(
  config: LlamaConfig,
  reader: TensorReader,
  linearFactory: LinearFactory = denseLinearFactory,
): Promise<LlamaForCausalLM> {
  const D = config.hiddenSize, V = config.vocabSize;
  const built: { dispose(): void }[] = [];
  try {
    const embedData = await readTensor(reader, "model.embed_tokens.weight", [V, D]);
    const embed = tf.variable(embedData, true, `model.embed_tokens.weight#${crypto.randomUUID()}`);
    embedData.dispose();
    built.push(embed);
    const layers: LlamaBlock[] = [];
    for (let i = 0; i < config.numHiddenLayers; i++) {
      const p = `model.layers.${i}`;
      const inputNorm = new RMSNorm(
        `${p}.input_layernorm`,
        await readTensor(reader, `${p}.input_layernorm.weight`, [D]),
        config.rmsNormEps,
        config.normUnitOffset,
      );
      built.push(inputNorm);
      const post = new RMSNorm(
        `${p}.post_attention_layernorm`,
        await readTensor(reader, `${p}.post_attention_layernorm.weight`, [D]),
        config.rmsNormEps,
        config.normUnitOffset,
      );
      built.push(post);
      const linears: Partial<BlockLinears> = {};
      const biases: Partial<Record<keyof BlockLinears, Bias>> = {};
      for (const n of BLOCK_LINEAR_NAMES) {
        const shape = linearShape(config, n);
        linears[n] = await linearFactory(linearPath(i, n), reader, shape);
        built.push(linears[n]!);
        if (config.biasedLinears.includes(n)) {
          const path = linearPath(i, n);
          biases[n] = new Bias(path, await readTensor(reader, `${path}.bias`, [shape[0]]));
          built.push(biases[n]!);
        }
      }
      layers.push(new LlamaBlock(i, config, inputNorm, post, linears as BlockLinears, biases));
    }
    const norm = new RMSNorm(
      "model.norm",
      await readTensor(reader, "model.norm.weight", [D]),
      config.rmsNormEps,
      config.normUnitOffset,
    );
    built.push(norm);
    const lmHead = config.tieWordEmbeddings ? null : new DenseLinear(
      "lm_head",
      (await readTensor(reader, "lm_head.weight", [V, D])) as tf.Tensor2D,
    );
    return new LlamaForCausalLM(config, embed, layers, norm, lmHead);
  } catch (e) {
    for (const b of built) b.dispose();
    throw e;
  }
}

/**
 * Picks how linear weights are built: pre-quantized bitsandbytes 4-bit or GPTQ
 * when the checkpoint says so (`quantization_config` / `quantize_config.json`),
 * quantize-on-load when `options.quantize` is set, else dense fp32.
 */
export async function chooseLinearFactory(
  dir: string,
  config: LlamaConfig,
  options: LoadModelOptions,
): Promise<LinearFactory> {
  const q = await import("../quant/quantized_loaders.ts");
  const qc = config.raw.quantization_config as Record<string, unknown> | undefined;
  let gptqFile: Record<string, unknown> | undefined;
  try {
    gptqFile = JSON.parse(await Deno.readTextFile(`${dir}/quantize_config.json`));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new SyntaxError(`${dir}/quantize_config.json: ${(e as Error).message}`);
    }
  }
  const method = qc?.quant_method ?? (gptqFile ? "gptq" : undefined);
  if (method === "gptq" && config.fusedLinears) {
    throw new RangeError(
      `${dir} is pre-quantized (${method}) with fused qkv_proj / gate_up_proj (${config.modelType}), which is ` +
        'not supported; load the full-precision checkpoint with { quantize: "nf4" } instead',
    );
  }
  if (method !== undefined && options.quantize) {
    throw new RangeError(`${dir} is already quantized (${method}); load it without the quantize option`);
  }
  switch (method) {
    case undefined:
      return options.quantize ? q.quantizedLinearFactory(options) : denseLinearFactory;
    case "bitsandbytes":
      if (qc?.load_in_4bit !== true) {
        throw new RangeError(
          `${dir}/config.json: only 4-bit bitsandbytes checkpoints are supported (load_in_4bit)`,
        );
      }
      // Fused checkpoints (Phi-3): each part is a 4-bit layer over its rows of the fused weight.
      return config.fusedLinears
        ? (await import("./fused_bnb.ts")).fusedBnbLinearFactory(config, `${dir}/model.safetensors`)
        : q.bnbLinearFactory(`${dir}/model.safetensors`);
    case "gptq": {
      const g = { ...(gptqFile ?? {}), ...(qc ?? {}) } as Record<string, unknown>;
      const bits = Number(g.bits ?? 4);
      if (bits !== 4) throw new RangeError(`${dir}: GPTQ bits=${bits} is not supported (only 4-bit)`);
      const format = (g.checkpoint_format ?? "gptq") as "gptq" | "gptq_v2";
      return q.gptqLinearFactory({ bits, groupSize: Number(g.group_size ?? 128), format }, dir);
    }
    default:
      throw new RangeError(
        `${dir}/config.json: quant_method "${method}" is not supported (bitsandbytes 4-bit, gptq)`,
      );
  }
}

/**
 * Loads an HF Llama/Mistral directory (`config.json` + `model.safetensors` or a
 * sharded index) into a trainable fp32 model.
 *
 * @example
 * ```ts
 * import { loadModel } from "./load_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const model = await loadModel("tests/fixtures/external/tiny-random-llama-2");
 * const logits = model.forward([[1, 42, 99]]);
 * if (logits.shape.join() !== "1,3,3000") throw new Error("bad shape");
 * logits.dispose();
 * model.dispose();
 * ```
 */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<LlamaForCausalLM> {
  const o = loadModelSchema.parse(options);
  refuseInterruptedSave(dir, "loadModel");
  await recoverInterruptedSave(dir); // a save killed between its two renames is restored here
  await ensureEngine();
  checkComputeDtype(o.computeDtype, "loadModel"); // before the (long) load
  const config = await readModelConfig(dir);
  const reader = await openCheckpoint(dir);
  try {
    refuseMissingLayers(dir, reader, config);
    const factory = await chooseLinearFactory(dir, config, options);
    const read = new Set<string>();
    // Fused q/k/v and gate/up tensors (Phi-3) are read as their parts.
    const model = await buildModel(config, splitFusedReader(trackReads(reader, read), config), factory)
      .catch((e) => {
        // e.g. a tensor missing from the checkpoint: say which checkpoint
        if (e instanceof Error && !e.message.includes(dir)) e.message = `${dir}: ${e.message}`;
        throw e;
      });
    try {
      await refuseUnusedTensors(dir, reader, read, config);
      if (o.computeDtype !== "float32") model.setComputeDtype(o.computeDtype);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  } finally {
    reader.close();
  }
}

/**
 * Refuses a config.json that asks for more layers than the checkpoint holds, before anything is
 * built (a corrupt `num_hidden_layers: 1e308` would otherwise loop for ever over absent layers).
 */
function refuseMissingLayers(dir: string, reader: TensorReader, config: LlamaConfig): void {
  let layers = 0;
  for (const n of reader.names()) {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (config.numHiddenLayers > layers) {
    throw new RangeError(
      `loadModel: ${dir}/config.json says num_hidden_layers ${config.numHiddenLayers} but the checkpoint ` +
        `holds ${layers} layer(s) (model.layers.0 to ${
          layers - 1
        }); use the config.json that belongs to these weights`,
    );
  }
}

/** `reader`, recording in `read` every tensor name asked about. */
function trackReads(reader: TensorReader, read: Set<string>): TensorReader {
  return new Proxy(reader, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      if (["has", "info", "readBytes", "readFloat32", "readTyped"].includes(key as string)) {
        return (name: string, ...rest: unknown[]) => {
          read.add(name);
          return v.call(target, name, ...rest);
        };
      }
      return v.bind(target);
    },
  });
}

/**
 * Refuses a checkpoint holding tensors the model did not use (a config with fewer layers
 * than the checkpoint, another architecture's extra weights), naming them. Companion
 * tensors of a module that was read (a quantized weight's absmax, scales, zeros, state)
 * count as used, as do RoPE caches and a tied model's redundant `lm_head.weight`.
 */
async function refuseUnusedTensors(
  dir: string,
  reader: TensorReader,
  read: Set<string>,
  config: LlamaConfig,
): Promise<void> {
  const modules = new Set([...read].map((n) => n.slice(0, n.lastIndexOf("."))));
  const unused: string[] = [];
  for (const n of reader.names()) {
    if (read.has(n) || /(^|\.)rotary_emb\.inv_freq$/.test(n)) continue;
    if (config.tieWordEmbeddings && n === "lm_head.weight") continue;
    const mod = n.slice(0, n.lastIndexOf("."));
    if (n.endsWith(".bias") && modules.has(mod)) {
      // A bias the family does not have changes the math unless it is all zeros (GPTQ writers
      // store zero biases for every layer).
      if ((await reader.readFloat32(n)).some((v) => v !== 0)) unused.push(n);
      continue;
    }
    if (!modules.has(mod) && ![...read].some((r) => n.startsWith(r + "."))) unused.push(n);
  }
  if (unused.length === 0) return;
  const layers = unused.map((n) => n.match(/^model\.layers\.(\d+)\./)?.[1]).filter((x) => x !== undefined);
  const extraLayers = [...new Set(layers.map(Number))].filter((i) => i >= config.numHiddenLayers);
  throw new RangeError(
    `loadModel: ${dir} holds ${unused.length} tensor(s) the model did not use: ${
      unused.slice(0, 5).join(", ")
    }${unused.length > 5 ? ", …" : ""}${
      extraLayers.length
        ? `; config.json says num_hidden_layers ${config.numHiddenLayers} but the checkpoint has layer(s) ${
          extraLayers.sort((a, b) => a - b).join(", ")
        }`
        : ""
    }. Use the config.json that belongs to these weights.`,
  );
}

/**
 * Exporting a fine-tuned model as a complete Hugging Face checkpoint that serving stacks load
 * as they are: the adapter folded into the weights (the model itself is not changed), weights
 * in the base's dtype, sharded like `save_pretrained`, a `config.json` without the stale
 * `quantization_config`, and the tokenizer files and `generation_config.json` copied.
 * @module
 */
import { writeShardedSafetensors } from "../io/checkpoint_files.ts";
import { writeDirAtomic } from "../io/atomic_dir.ts";
import type { LlamaForCausalLM } from "./llama.ts";
import { finiteEntries } from "./save_model.ts";
import { defineOptions, type FieldsOf, integer, oneOf, string } from "../options/schema.ts";

/** Options for {@linkcode exportMerged}. */
export interface ExportMergedOptions {
  /**
   * Storage dtype of the weights. Default: the base's (`torch_dtype` / `dtype` in its
   * `config.json`), BF16 when it does not say.
   */
  dtype?: "F32" | "F16" | "BF16";
  /** Largest shard in bytes; a bigger model is split with `model.safetensors.index.json`. @default {5000000000} */
  maxShardBytes?: number;
  /**
   * Folder whose tokenizer files and `generation_config.json` are copied. Default: the folder the
   * model was loaded from (`loadModel`).
   */
  tokenizerDir?: string;
}

/** The schema of {@linkcode exportMerged}'s options. */
export const exportMergedSchema = defineOptions(
  "exportMerged",
  {
    dtype: oneOf(
      "Storage dtype of the weights; default: the base's torch_dtype, BF16 when it does not say.",
      ["F32", "F16", "BF16"] as const,
    ),
    maxShardBytes: integer("Largest shard in bytes (bigger models get model.safetensors.index.json).", {
      min: 1,
      default: 5_000_000_000,
    }),
    tokenizerDir: string(
      "Folder whose tokenizer files and generation_config.json are copied; default: where the model was loaded from.",
      { nonEmpty: true },
    ),
  } satisfies FieldsOf<ExportMergedOptions>,
);

/** Files copied next to the weights when the source folder has them. */
export const COPIED_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "chat_template.jinja",
  "generation_config.json",
] as const;

const TORCH_TO_DTYPE: Record<string, "F32" | "F16" | "BF16"> = {
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
};

const DTYPE_TO_TORCH = { F32: "float32", F16: "float16", BF16: "bfloat16" } as const;

/**
 * The dtype a base `config.json` was stored in (`torch_dtype`, or `dtype` in Transformers v5),
 * BF16 when it does not say or says something we do not write.
 *
 * @example
 * ```ts
 * import { baseDtype } from "./export_merged.ts";
 * if (baseDtype({ torch_dtype: "float16" }) !== "F16" || baseDtype({}) !== "BF16") throw new Error();
 * ```
 */
export function baseDtype(raw: Record<string, unknown>): "F32" | "F16" | "BF16" {
  const t = raw.torch_dtype ?? raw.dtype;
  return (typeof t === "string" && TORCH_TO_DTYPE[t.replace(/^torch\./, "")]) || "BF16";
}

/** What {@linkcode exportMerged} wrote. */
export interface ExportMergedResult {
  dir: string;
  dtype: "F32" | "F16" | "BF16";
  /** Safetensors files written (one, or the shards). */
  shards: number;
  /** Tensor bytes written. */
  bytes: number;
  /** Names of the files copied from the tokenizer folder. */
  copied: string[];
}

/**
 * Writes `model` with its adapter merged (`W + ΔW` per layer, the model is left as it is) as a
 * complete HF checkpoint in `dir`, atomically (a kill leaves the previous folder or the new one).
 * A 4-bit base is dequantized into the export. Non-finite weights are refused by name.
 *
 * @example
 * ```ts
 * import { exportMerged } from "./export_merged.ts";
 * import { initModel } from "./init_model.ts";
 * import { loadModel } from "./load_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "qwen2", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, tie_word_embeddings: true });
 * const dir = await Deno.makeTempDir();
 * const r = await exportMerged(m, `${dir}/out`, { maxShardBytes: 400 });
 * const back = await loadModel(`${dir}/out`);
 * if (r.dtype !== "BF16" || r.shards < 2 || back.config.modelType !== "qwen2") throw new Error(JSON.stringify(r));
 * m.dispose(); back.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function exportMerged(
  model: LlamaForCausalLM,
  dir: string,
  options: ExportMergedOptions = {},
): Promise<ExportMergedResult> {
  const o = exportMergedSchema.parse(options);
  const raw = model.config.raw;
  const dtype = o.dtype ?? baseDtype(raw);
  const from = o.tokenizerDir ?? model.config.sourceDir;
  let shards = 0, bytes = 0;
  const copied: string[] = [];
  await writeDirAtomic(dir, async (tmp) => {
    const entries = finiteEntries(
      model,
      dtype,
      (name, value, at) =>
        `exportMerged: "${name}" holds ${value} at element ${at} after merging; nothing was written`,
    );
    const r = await writeShardedSafetensors(tmp, entries, {
      maxShardBytes: o.maxShardBytes,
      metadata: { format: "pt" },
    });
    shards = r.files.length;
    bytes = r.totalSize;
    const { quantization_config: _q, ...config } = raw;
    await Deno.writeTextFile(
      `${tmp}/config.json`,
      JSON.stringify({ ...config, torch_dtype: DTYPE_TO_TORCH[dtype] }, null, 2) + "\n",
    );
    if (from !== undefined) {
      for (const name of COPIED_FILES) {
        try {
          await Deno.copyFile(`${from}/${name}`, `${tmp}/${name}`);
          copied.push(name);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
    }
  });
  return { dir, dtype, shards, bytes, copied };
}

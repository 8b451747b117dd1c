/**
 * `deno task merge <base> <adapter> <out>`: folds a PEFT LoRA/DoRA adapter into its base model and
 * writes a complete HF checkpoint (weights in the base's dtype, sharded over `--max-shard-size`,
 * `config.json` without `quantization_config`, tokenizer files and `generation_config.json` copied).
 * A 4-bit base is dequantized into the export. Options: `deno task merge --help`.
 * @module
 */
import { initEngine } from "../lib/engine/backend.ts";
import { loadModel } from "../lib/models/load_model.ts";
import { loadAdapter } from "../lib/adapters/peft_format.ts";
import { exportMerged, type ExportMergedOptions } from "../lib/models/export_merged.ts";
import { defineCli, parseCli, runCli } from "./_cli.ts";

const MERGE_CLI = defineCli({
  name: "merge",
  summary: "Folds a PEFT adapter into its base model and writes a complete HF checkpoint (weights in the " +
    "base's dtype, sharded, tokenizer and generation config copied) that serving stacks load as is.",
  usage: "deno task merge <base_dir> <adapter_dir> <out_dir> [options]",
  positionals: { min: 3, max: 3, names: "<base_dir> <adapter_dir> <out_dir>" },
  options: {
    dtype: {
      type: "string",
      choices: ["F32", "F16", "BF16"],
      defaultText: "the base's torch_dtype (BF16 when it does not say)",
      api: "dtype",
      description: "storage dtype of the merged weights",
      example: "--dtype F16",
    },
    "max-shard-size": {
      type: "size",
      default: "5GB",
      api: "maxShardBytes",
      description: "largest shard; bigger models get model.safetensors.index.json",
      example: "--max-shard-size 2GB",
    },
    "tokenizer-dir": {
      type: "string",
      defaultText: "<base_dir>",
      api: "tokenizerDir",
      description: "folder whose tokenizer files and generation_config.json are copied",
      example: "--tokenizer-dir path/to/tokenizer",
    },
  },
  examples: [
    "deno task merge out/families/qwen2 out/run/adapter out/merged",
    "deno task merge base_dir adapter_dir out_dir --dtype F16 --max-shard-size 2GB",
  ],
});

/** Parsed command line of the merge script. */
export interface MergeArgs {
  base: string;
  adapter: string;
  out: string;
  options: ExportMergedOptions;
}

/**
 * Parses the command line into `exportMerged()` arguments.
 *
 * @example
 * ```ts
 * import { parseMergeArgs } from "./merge.ts";
 * const a = parseMergeArgs(["base", "ad", "out", "--dtype", "F16", "--max-shard-size", "2GB"]);
 * if (a.options.dtype !== "F16" || a.options.maxShardBytes !== 2e9 || a.out !== "out") throw new Error();
 * ```
 */
export function parseMergeArgs(args: string[]): MergeArgs {
  const { values: v, positionals } = parseCli(MERGE_CLI, args);
  return {
    base: positionals[0],
    adapter: positionals[1],
    out: positionals[2],
    options: {
      ...(v.dtype === undefined ? {} : { dtype: v.dtype as "F32" | "F16" | "BF16" }),
      maxShardBytes: v["max-shard-size"],
      ...(v["tokenizer-dir"] === undefined ? {} : { tokenizerDir: v["tokenizer-dir"] }),
    },
  };
}

/** Loads `base`, attaches the adapter and exports the merged checkpoint. */
export async function mergeCheckpoint(args: MergeArgs): Promise<Awaited<ReturnType<typeof exportMerged>>> {
  await initEngine();
  const model = await loadModel(args.base);
  try {
    await loadAdapter(model, args.adapter);
    return await exportMerged(model, args.out, args.options);
  } finally {
    model.dispose();
  }
}

if (import.meta.main) {
  await runCli(MERGE_CLI, async () => {
    const args = parseMergeArgs(Deno.args);
    const t0 = performance.now();
    const r = await mergeCheckpoint(args);
    console.log(
      `merged ${args.adapter} into ${args.base}: ${
        (r.bytes / 2 ** 20).toFixed(1)
      } MiB ${r.dtype} in ${r.shards} ` +
        `shard(s) -> ${r.dir}${r.copied.length ? ` (+ ${r.copied.join(", ")})` : ""} in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
    );
  });
}

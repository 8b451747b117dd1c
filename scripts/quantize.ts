/**
 * `deno task quantize <in_dir> <out_dir>`: writes a bitsandbytes 4-bit copy of an HF Llama checkpoint
 * (loadable here and by transformers) and prints the sizes before and after and the bits per quantized
 * parameter. Options: `deno task quantize --help`.
 * @module
 */
import { quantizeCheckpoint, type QuantizeCheckpointOptions } from "../lib/quant/quantize_checkpoint.ts";
import { resolveQuantize } from "../lib/quant/quantize_option.ts";
import { defineCli, parseCli, runCli } from "./_cli.ts";

const QUANTIZE_CLI = defineCli({
  name: "quantize",
  summary: "Writes a bitsandbytes 4-bit (NF4 or FP4) copy of an HF Llama checkpoint, loadable here and by " +
    "transformers; prints the sizes before and after and the bits per quantized parameter.",
  usage: "deno task quantize <in_dir> <out_dir> [options]",
  positionals: { min: 2, max: 2, names: "<in_dir> <out_dir>" },
  options: {
    quantize: {
      type: "string",
      default: "nf4",
      choices: ["nf4", "fp4"],
      api: "quantize.type",
      description: "4-bit data type",
      example: "--quantize fp4",
    },
    "double-quant": {
      type: "boolean",
      default: true,
      api: "quantize.doubleQuant",
      description: "double-quantize the absmax constants (QLoRA)",
      example: "--no-double-quant",
    },
    blocksize: {
      type: "integer",
      default: 64,
      choices: ["32", "64", "128", "256", "512", "1024", "2048", "4096"],
      api: "quantize.blocksize",
      description: "elements per absmax block",
      example: "--blocksize 128",
    },
    overwrite: {
      type: "boolean",
      api: "overwrite",
      description: "replace a non-empty <out_dir>",
      example: "--overwrite",
    },
  },
  renamed: { fp4: "--quantize fp4", nf4: "--quantize nf4" },
  examples: [
    "deno task quantize notebooks/models/tiny-shakespeare-llama out/tiny-nf4",
    "deno task quantize in_dir out_dir --quantize fp4 --no-double-quant --blocksize 128 --overwrite",
  ],
});

/** Parsed command line of the quantize script. */
export interface QuantizeArgs {
  inDir: string;
  outDir: string;
  options: QuantizeCheckpointOptions;
}

/**
 * Parses the command line into `quantizeCheckpoint()` arguments.
 *
 * @param args the arguments after `deno task quantize`
 * @returns the two folders and the options
 * @throws {CliUsageError} on an unknown option, a bad value or a wrong number of folders
 * @example
 * ```ts
 * import { parseQuantizeArgs } from "./quantize.ts";
 * const a = parseQuantizeArgs(["in", "out", "--quantize", "fp4", "--blocksize", "128"]);
 * const q = a.options.quantize as { type: string; blocksize: number };
 * if (q.type !== "fp4" || q.blocksize !== 128 || a.outDir !== "out") throw new Error();
 * ```
 */
export function parseQuantizeArgs(args: string[]): QuantizeArgs {
  const { values: v, positionals } = parseCli(QUANTIZE_CLI, args);
  return {
    inDir: positionals[0],
    outDir: positionals[1],
    options: {
      quantize: { type: v.quantize as "nf4" | "fp4", doubleQuant: v["double-quant"], blocksize: v.blocksize },
      overwrite: v.overwrite,
    },
  };
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

if (import.meta.main) {
  await runCli(QUANTIZE_CLI, async () => {
    const args = parseQuantizeArgs(Deno.args);
    const t0 = performance.now();
    const r = await quantizeCheckpoint(args.inDir, args.outDir, args.options);
    const o = resolveQuantize(args.options.quantize);
    console.log(
      `${o.type}${o.doubleQuant ? "+dq" : ""} blocksize ${o.blocksize}: ` +
        `quantized ${r.quantizedWeights} weights (${(r.quantizedParams / 1e6).toFixed(2)} M params) at ` +
        `${r.bitsPerParam.toFixed(3)} bits/param`,
    );
    console.log(
      `tensors: ${mb(r.inputTensorBytes)} -> ${mb(r.outputTensorBytes)} ` +
        `(${(r.outputTensorBytes / r.inputTensorBytes).toFixed(3)}x) in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s; wrote ${r.outDir}${r.copiedFiles.length ? ` (+ ${r.copiedFiles.join(", ")})` : ""}`,
    );
  });
}

/**
 * `deno task quantize <in> <out> [--fp4] [--no-double-quant] [--blocksize N] [--overwrite]`:
 * writes a bitsandbytes 4-bit copy of an HF Llama checkpoint (loadable here and by transformers)
 * and prints the sizes before and after and the bits per quantized parameter.
 * @module
 */
import { quantizeCheckpoint, type QuantizeCheckpointOptions } from "../lib/quant/quantize_checkpoint.ts";

const USAGE =
  "usage: deno task quantize <in_dir> <out_dir> [--fp4] [--no-double-quant] [--blocksize N] [--overwrite]";

/** Parsed command line of the quantize script. */
export interface QuantizeArgs {
  inDir: string;
  outDir: string;
  options: QuantizeCheckpointOptions;
}

/**
 * Parses the command line; throws a TypeError with the usage line on anything unexpected.
 *
 * @example
 * ```ts
 * import { parseQuantizeArgs } from "./quantize.ts";
 * const a = parseQuantizeArgs(["in", "out", "--fp4", "--blocksize", "128"]);
 * if (a.options.quantType !== "fp4" || a.options.blocksize !== 128 || a.outDir !== "out") throw new Error();
 * ```
 */
export function parseQuantizeArgs(args: string[]): QuantizeArgs {
  const positional: string[] = [];
  const options: QuantizeCheckpointOptions = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    switch (a) {
      case "--fp4":
        options.quantType = "fp4";
        break;
      case "--nf4":
        options.quantType = "nf4";
        break;
      case "--no-double-quant":
        options.doubleQuant = false;
        break;
      case "--overwrite":
        options.overwrite = true;
        break;
      case "--blocksize": {
        const n = Number(args[++i]);
        if (!Number.isInteger(n)) {
          throw new TypeError(`--blocksize needs an integer, received ${args[i]}\n${USAGE}`);
        }
        options.blocksize = n;
        break;
      }
      default:
        if (a.startsWith("--")) throw new TypeError(`unknown flag ${a}\n${USAGE}`);
        positional.push(a);
    }
  }
  if (positional.length !== 2) {
    throw new TypeError(`expected <in_dir> <out_dir>, received ${positional.length} paths\n${USAGE}`);
  }
  return { inDir: positional[0], outDir: positional[1], options };
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

if (import.meta.main) {
  let args: QuantizeArgs;
  try {
    args = parseQuantizeArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const t0 = performance.now();
  const r = await quantizeCheckpoint(args.inDir, args.outDir, args.options);
  const o = args.options;
  console.log(
    `${o.quantType ?? "nf4"}${o.doubleQuant === false ? "" : "+dq"} blocksize ${o.blocksize ?? 64}: ` +
      `quantized ${r.quantizedWeights} weights (${(r.quantizedParams / 1e6).toFixed(2)} M params) at ` +
      `${r.bitsPerParam.toFixed(3)} bits/param`,
  );
  console.log(
    `tensors: ${mb(r.inputTensorBytes)} -> ${mb(r.outputTensorBytes)} ` +
      `(${(r.outputTensorBytes / r.inputTensorBytes).toFixed(3)}x) in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s; ` +
      `wrote ${r.outDir}${r.copiedFiles.length ? ` (+ ${r.copiedFiles.join(", ")})` : ""}`,
  );
}

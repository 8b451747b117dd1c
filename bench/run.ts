/**
 * `deno task bench`: every benchmark, printed as a table with ratios against a
 * reference measured in the same run, and written as JSON rows
 * `[{name, unit, value, baseline?, ratio?}]` to `bench/results/latest.json`.
 * Speed and memory targets are judged here, never in tests.
 *
 * Options: `--only train,matmul,galore,quant,optimizers,qdylora,plan` to run a subset (`--help`).
 * @module
 */
import type { BenchRow } from "./matmul_bench.ts";
import { defineCli, runCli } from "../scripts/_cli.ts";

const SUITES: Record<string, () => Promise<BenchRow[]>> = {
  train: async () => (await import("./train_bench.ts")).runTrainBench(),
  matmul: async () => (await import("./matmul_bench.ts")).runMatmulBench(),
  galore: async () => (await import("./galore_bench.ts")).runGaloreBench(),
  quant: async () => (await import("./quant_bench.ts")).runQuantBench(),
  optimizers: async () => (await import("./optimizer_compare.ts")).runOptimizerCompare(),
  qdylora: async () => (await import("./qdylora_compare.ts")).runQDyLoRACompare(),
  plan: async () => (await import("./plan_validation.ts")).runPlanValidation(),
};

const BENCH_CLI = defineCli({
  name: "bench",
  summary: "Runs the benchmarks, prints a table with ratios against a reference measured in the same run, " +
    "and writes the rows to bench/results/latest.json (the full run takes ~25 min).",
  usage: "deno task bench [options]",
  options: {
    only: {
      type: "list",
      default: Object.keys(SUITES).join(","),
      choices: Object.keys(SUITES),
      placeholder: "SUITE,...",
      description: "run only these suites",
      example: "--only matmul,quant",
    },
  },
  examples: ["deno task bench", "deno task bench --only plan"],
});

await runCli(BENCH_CLI, async ({ values: { only } }) => {
  const rows: (BenchRow & { suite: string })[] = [];
  for (const name of only) {
    const suite = SUITES[name];
    console.log(`\n== ${name}`);
    const t0 = performance.now();
    for (const r of await suite()) {
      rows.push({ suite: name, ...r });
      const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(3)}` : "";
      console.log(`${r.name.padEnd(64)} ${r.value.toPrecision(6).padStart(14)} ${r.unit}${ratio}`);
    }
    console.log(`(${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const dir = new URL("./results/", import.meta.url).pathname;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/latest.json`, JSON.stringify(rows, null, 1) + "\n");
  console.log(`\nwrote ${dir}latest.json (${rows.length} rows)`);
});

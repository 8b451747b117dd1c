/**
 * `deno task bench`: every benchmark, printed as a table with ratios against a
 * reference measured in the same run, and written as JSON rows
 * `[{name, unit, value, baseline?, ratio?}]` to `bench/results/latest.json`.
 * Speed and memory targets are judged here, never in tests.
 *
 * Options: `--only train,matmul,galore,quant,optimizers,qdylora,plan` to run a subset.
 * @module
 */
import type { BenchRow } from "./matmul_bench.ts";

const SUITES: Record<string, () => Promise<BenchRow[]>> = {
  train: async () => (await import("./train_bench.ts")).runTrainBench(),
  matmul: async () => (await import("./matmul_bench.ts")).runMatmulBench(),
  galore: async () => (await import("./galore_bench.ts")).runGaloreBench(),
  quant: async () => (await import("./quant_bench.ts")).runQuantBench(),
  optimizers: async () => (await import("./optimizer_compare.ts")).runOptimizerCompare(),
  qdylora: async () => (await import("./qdylora_compare.ts")).runQDyLoRACompare(),
  plan: async () => (await import("./plan_validation.ts")).runPlanValidation(),
};

const only = Deno.args.includes("--only")
  ? Deno.args[Deno.args.indexOf("--only") + 1].split(",")
  : Object.keys(SUITES);
const rows: (BenchRow & { suite: string })[] = [];
for (const name of only) {
  const suite = SUITES[name];
  if (!suite) {
    throw new RangeError(`unknown bench suite "${name}" (known: ${Object.keys(SUITES).join(", ")})`);
  }
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

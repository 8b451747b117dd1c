/**
 * Matmul throughput (GFLOP/s) for 1024³ NN / NT / TN on: stock wasm, wasm with
 * explicit transposes, wasm with OpenBLAS (FFI), and the cpu backend, with the
 * ratio to stock wasm. No assertions: `deno run -A bench/matmul_bench.ts`.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import "@tensorflow/tfjs-backend-wasm";
import { loadBlas } from "../lib/engine/blas.ts";
import { registerMatmulKernels, restoreMatmulKernels } from "../lib/engine/matmul_kernels.ts";
import { defineOptions, type FieldsOf, integer, number } from "../lib/options/schema.ts";

/** One benchmark result row. */
export interface BenchRow {
  name: string;
  unit: string;
  value: number;
  baseline?: number;
  ratio?: number;
}

/** Options for {@linkcode runMatmulBench}. */
export interface MatmulBenchOptions {
  /** Matrix size n for n³ matmuls. @default {1024} */
  size?: number;
  /** Minimum seconds spent per measurement. @default {0.5} */
  minSeconds?: number;
}

/** The schema of {@linkcode runMatmulBench}'s options. */
export const matmulBenchSchema = defineOptions(
  "runMatmulBench",
  {
    size: integer("Matrix size n for n^3 matmuls.", { min: 1, default: 1024 }),
    minSeconds: number("Minimum seconds spent per measurement.", { above: 0, default: 0.5 }),
  } satisfies FieldsOf<MatmulBenchOptions>,
);

const MODES: [string, boolean, boolean][] = [["NN", false, false], ["NT", false, true], ["TN", true, false]];

function gflops(n: number, tA: boolean, tB: boolean, minSeconds: number): number {
  const a = tf.randomUniform([n, n]), b = tf.randomUniform([n, n]);
  tf.matMul(a, b, tA, tB).dispose(); // warm-up
  let reps = 0;
  const t0 = performance.now();
  do {
    const c = tf.matMul(a, b, tA, tB);
    c.dataSync();
    c.dispose();
    reps++;
  } while (performance.now() - t0 < minSeconds * 1000);
  const s = (performance.now() - t0) / 1000 / reps;
  a.dispose();
  b.dispose();
  return (2 * n ** 3) / s / 1e9;
}

/**
 * Runs the benchmark and returns one row per (engine, transpose mode).
 *
 * @example
 * ```ts
 * import { runMatmulBench } from "./matmul_bench.ts";
 * const rows = await runMatmulBench({ size: 32, minSeconds: 0.01 });
 * if (!rows.every((r) => r.value > 0 && r.unit === "GFLOP/s")) throw new Error("bad rows");
 * ```
 */
export async function runMatmulBench(options: MatmulBenchOptions = {}): Promise<BenchRow[]> {
  const { size: n, minSeconds } = matmulBenchSchema.parse(options);
  const prevBackend = tf.getBackend();
  const rows: BenchRow[] = [];
  await tf.setBackend("wasm");
  const stock: Record<string, number> = {};
  const blas = loadBlas();
  const engines: [string, () => void][] = [
    ["wasm stock", restoreMatmulKernels],
    ["wasm explicit-transpose", () => registerMatmulKernels({ blas: null })],
    ...(blas ? [["wasm + OpenBLAS", () => registerMatmulKernels({ blas })] as [string, () => void]] : []),
  ];
  for (const [label, setup] of engines) {
    setup();
    for (const [mode, tA, tB] of MODES) {
      const value = gflops(n, tA, tB, minSeconds);
      if (label === "wasm stock") stock[mode] = value;
      rows.push({ name: `matmul ${n}³ ${mode} ${label}`, unit: "GFLOP/s", value, baseline: stock[mode] });
    }
  }
  await tf.setBackend("cpu");
  for (const [mode, tA, tB] of MODES) {
    const value = gflops(n, tA, tB, Math.min(minSeconds, 0.1));
    rows.push({ name: `matmul ${n}³ ${mode} cpu backend`, unit: "GFLOP/s", value, baseline: stock[mode] });
  }
  for (const r of rows) if (r.baseline) r.ratio = r.value / r.baseline;
  // Leave the engine as found: BLAS kernels back on when available.
  await tf.setBackend("wasm");
  registerMatmulKernels({ blas });
  if (prevBackend) await tf.setBackend(prevBackend);
  return rows;
}

if (import.meta.main) {
  for (const r of await runMatmulBench()) {
    console.log(
      `${r.name.padEnd(44)} ${r.value.toFixed(1).padStart(7)} ${r.unit}  x${(r.ratio ?? 1).toFixed(2)}`,
    );
  }
}

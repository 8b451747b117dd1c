/**
 * GFLOP/s of the native bf16 GEMM (`nb_gemm_bf16`, AVX512_BF16) against OpenBLAS `cblas_sgemm` on the
 * matmul shapes of a QLoRA training step (TinyLlama-1.1B and SmolLM-135M at 256 tokens, and 1024³), both
 * in the same run with the same threads, in alternating rounds (a block of sgemm calls, then a block of
 * bf16 calls, 3 times) so that load from other processes hits both alike: the speed-up is the median
 * over rounds of (best sgemm call / best bf16 call). Blocks, not single alternating calls: OpenBLAS's
 * workers spin for ~0.1 s after a call and would steal the core of the bf16 GEMM's second thread.
 * Prints a table. No assertions: `deno task bench:gemm-bf16`.
 * @module
 */
import { loadBlas } from "../lib/engine/blas.ts";
import { nativeKernels, setNativeThreads } from "../lib/engine/native.ts";
import { defineCli, runCli } from "../scripts/_cli.ts";

/** One GEMM shape: `op(A)[M, K] · op(B)[K, N]`, with `tA`/`tB` as in cblas (B stored `[N, K]` when `tB`). */
export interface GemmShape {
  name: string;
  m: number;
  n: number;
  k: number;
  tA: boolean;
  tB: boolean;
}

/** The training shapes (x·Wᵀ with W stored `[out, in]` is NT; the input gradient dy·W is NN). */
export const TRAINING_SHAPES: readonly GemmShape[] = [
  { name: "tinyllama q/o  x·Wᵀ", m: 256, n: 2048, k: 2048, tA: false, tB: true },
  { name: "tinyllama gate/up x·Wᵀ", m: 256, n: 5632, k: 2048, tA: false, tB: true },
  { name: "tinyllama down x·Wᵀ", m: 256, n: 2048, k: 5632, tA: false, tB: true },
  { name: "tinyllama down dx NN", m: 256, n: 2048, k: 5632, tA: false, tB: false },
  { name: "smollm gate/up x·Wᵀ", m: 256, n: 1536, k: 576, tA: false, tB: true },
  { name: "smollm down x·Wᵀ", m: 256, n: 576, k: 1536, tA: false, tB: true },
  { name: "smollm lm head x·Wᵀ", m: 256, n: 49152, k: 576, tA: false, tB: true },
  { name: "square 1024³ NN", m: 1024, n: 1024, k: 1024, tA: false, tB: false },
];

/** One result row. */
export interface GemmBf16Row {
  shape: GemmShape;
  /** Best sgemm call. */
  sgemmGflops: number;
  /** Best bf16 call. */
  bf16Gflops: number;
  /** Median over rounds of the best sgemm time / the best bf16 time of that round. */
  ratio: number;
  /** Timed rounds. */
  rounds: number;
}

/** Options for {@linkcode runGemmBf16Bench}. */
export interface GemmBf16BenchOptions {
  /** Shapes to time. @default {TRAINING_SHAPES} */
  shapes?: readonly GemmShape[];
  /** Threads for both kernels. @default {2} */
  threads?: number;
  /** Seconds per shape, both kernels together (3 rounds of a block of each, at least 2 calls a block). @default {3} */
  seconds?: number;
}

function fill(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Seconds per call of `f`: the best of the calls made in `budget` seconds (at least 2). */
function bestCall(f: () => void, budget: number): number {
  let best = Infinity, calls = 0;
  const t0 = performance.now();
  while (calls < 2 || performance.now() - t0 < budget * 1000) {
    const t = performance.now();
    f();
    best = Math.min(best, (performance.now() - t) / 1000);
    calls++;
  }
  return best;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/**
 * Times sgemm and the bf16 GEMM on each shape; throws when either is unavailable (saying which).
 *
 * @example
 * ```ts
 * import { runGemmBf16Bench } from "./gemm_bf16_bench.ts";
 * import { nativeKernels } from "../lib/engine/native.ts";
 * import { loadBlas } from "../lib/engine/blas.ts";
 * if (nativeKernels().bf16Gemm && loadBlas()) {
 *   const shapes = [{ name: "tiny", m: 8, n: 40, k: 9, tA: false, tB: true }];
 *   const [row] = runGemmBf16Bench({ shapes, threads: 1, seconds: 0.01 });
 *   if (!(row.ratio > 0 && row.bf16Gflops > 0)) throw new Error(JSON.stringify(row));
 * }
 * ```
 */
export function runGemmBf16Bench(options: GemmBf16BenchOptions = {}): GemmBf16Row[] {
  const { shapes = TRAINING_SHAPES, threads = 2, seconds = 3 } = options;
  const native = nativeKernels();
  if (!native.bf16Gemm) {
    throw new Error(
      `the native bf16 GEMM is unavailable (${native.source}): it needs scripts/setup.sh and an avx512_bf16 CPU`,
    );
  }
  const blas = loadBlas({ threads });
  if (!blas) throw new Error("no BLAS library found (install libopenblas0-pthread): nothing to compare with");
  setNativeThreads(threads);
  const rows: GemmBf16Row[] = [];
  for (const s of shapes) {
    const { m, n, k, tA, tB } = s;
    const a = fill(m * k, 1), b = fill(k * n, 2), c = new Float32Array(m * n);
    const lda = tA ? m : k, ldb = tB ? k : n;
    const sgemm = () => blas.sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, n);
    const bf16 = () => native.gemmBf16(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, n);
    sgemm();
    bf16(); // warm-up: threads, caches, page faults
    const ts: number[] = [], tb: number[] = [];
    for (let round = 0; round < 3; round++) {
      ts.push(bestCall(sgemm, seconds / 6));
      tb.push(bestCall(bf16, seconds / 6));
    }
    const flop = 2 * m * n * k;
    rows.push({
      shape: s,
      sgemmGflops: flop / Math.min(...ts) / 1e9,
      bf16Gflops: flop / Math.min(...tb) / 1e9,
      ratio: median(ts.map((t, i) => t / tb[i])),
      rounds: ts.length,
    });
  }
  return rows;
}

/**
 * The rows as a markdown table.
 *
 * @example
 * ```ts
 * import { formatGemmBf16Table } from "./gemm_bf16_bench.ts";
 * const shape = { name: "x", m: 1, n: 2, k: 3, tA: false, tB: true };
 * const table = formatGemmBf16Table([{ shape, sgemmGflops: 100, bf16Gflops: 180, ratio: 1.8, rounds: 3 }]);
 * if (!table.includes("| x | 1 | 2 | 3 | NT | 100.0 | 180.0 | 1.80x | 1.80x |")) throw new Error(table);
 * ```
 */
export function formatGemmBf16Table(rows: readonly GemmBf16Row[]): string {
  const lines = [
    "| shape | M | N | K | op | sgemm GFLOP/s (best) | bf16 GFLOP/s (best) | best / best | speed-up (median round) |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const { shape: s, sgemmGflops, bf16Gflops, ratio } of rows) {
    const op = `${s.tA ? "T" : "N"}${s.tB ? "T" : "N"}`;
    const cells = [s.name, s.m, s.n, s.k, op, sgemmGflops.toFixed(1), bf16Gflops.toFixed(1)];
    cells.push(`${(bf16Gflops / sgemmGflops).toFixed(2)}x`, `${ratio.toFixed(2)}x`);
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

const CLI = defineCli({
  name: "bench:gemm-bf16",
  summary: "GFLOP/s of the native bf16 GEMM (AVX512_BF16) vs OpenBLAS sgemm on the QLoRA training shapes " +
    "(TinyLlama-1.1B, SmolLM-135M at 256 tokens, 1024³), both in the same run, with the ratio.",
  usage: "deno task bench:gemm-bf16 [options]",
  options: {
    threads: {
      type: "integer",
      min: 1,
      default: 2,
      description: "threads for both kernels",
      example: "--threads 1",
    },
    seconds: {
      type: "number",
      min: 0.01,
      default: 3,
      description: "seconds per shape, both kernels (3 rounds of a block of each; the median round counts)",
      example: "--seconds 0.5",
    },
    only: {
      type: "list",
      defaultText: "every shape",
      choices: TRAINING_SHAPES.map((_, i) => String(i + 1)),
      description: "run only these shapes (1-based, in the table's order)",
      example: "--only 1,4",
    },
    json: {
      type: "string",
      defaultText: "none",
      description: "also write the rows as JSON to this file",
      example: "--json out/gemm_bf16.json",
    },
  },
  examples: ["deno task bench:gemm-bf16", "deno task bench:gemm-bf16 --threads 1 --only 1,4 --seconds 0.5"],
});

if (import.meta.main) {
  await runCli(CLI, async ({ values: v }) => {
    const shapes = v.only ? v.only.map((i) => TRAINING_SHAPES[Number(i) - 1]) : TRAINING_SHAPES;
    const rows = runGemmBf16Bench({ shapes, threads: v.threads, seconds: v.seconds });
    console.log(`threads: ${v.threads}; native: ${nativeKernels().source}; BLAS: ${loadBlas()!.path}`);
    console.log(formatGemmBf16Table(rows));
    if (v.json) {
      await Deno.writeTextFile(v.json, JSON.stringify({ threads: v.threads, rows }, null, 2) + "\n");
    }
  });
}

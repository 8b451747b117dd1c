/**
 * GaLore benchmarks: randomized vs exact projector refresh (time and largest principal
 * angle to the exact subspace), GaLore step time vs AdamW amortised over
 * updateProjGap = 200, and optimizer state bytes (AdamW vs GaLore vs GaLore 8-bit).
 *
 * Run: `deno run -A bench/galore_bench.ts` (prints a table; about a minute, most of it
 * the Float64 JS eigen-solver of the exact reference).
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initEngine } from "../lib/engine/backend.ts";
import { createAdamW } from "../lib/optim/adamw.ts";
import { createGaLoreAdamW } from "../lib/optim/galore_adamw.ts";
import { principalAngles, topSingularSubspace } from "../lib/optim/galore_projector.ts";

/** One benchmark result; `ratio` = value / baseline. */
export interface BenchRow {
  name: string;
  unit: string;
  value: number;
  baseline?: number;
  ratio?: number;
}

/** Options for {@linkcode runGaloreBench}. */
export interface GaloreBenchOptions {
  /** Shapes for the refresh benchmark. @default {[[1024, 1024], [4096, 1024]]} */
  refreshShapes?: [number, number][];
  /** Rank of the gradients and projectors. @default {128} */
  rank?: number;
  /** Side of the square weight for step timing. @default {1024} */
  stepSize?: number;
  /** Timed optimizer steps (after one warm-up). @default {5} */
  steps?: number;
}

/** Rank-r gradient (singular values decaying 1 → 0.1) plus 1% Gaussian noise. */
function lowRankPlusNoise(m: number, n: number, r: number, seed: number): tf.Tensor2D {
  return tf.tidy(() => {
    const a = tf.randomNormal([m, r], 0, 1 / Math.sqrt(m), "float32", seed);
    const s = tf.reshape(tf.linspace(1, 0.1, r), [1, r]);
    const b = tf.randomNormal([r, n], 0, 1 / Math.sqrt(n), "float32", seed + 1);
    const e = tf.randomNormal([m, n], 0, 0.01 / Math.sqrt(n), "float32", seed + 2);
    return tf.add(tf.matMul(tf.mul(a, s), b), e) as tf.Tensor2D;
  });
}

function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const out = fn();
  return [out, (performance.now() - t0) / 1000];
}

/**
 * Runs the benchmarks and returns the rows (no printing).
 *
 * @example
 * ```ts ignore
 * import { runGaloreBench } from "./galore_bench.ts";
 * const rows = await runGaloreBench({ refreshShapes: [[64, 48]], rank: 8, stepSize: 64 });
 * if (!rows.some((r) => r.name.includes("angle"))) throw new Error("missing rows");
 * ```
 */
export async function runGaloreBench(options: GaloreBenchOptions = {}): Promise<BenchRow[]> {
  await initEngine();
  const shapes = options.refreshShapes ?? [[1024, 1024], [4096, 1024]];
  const rank = options.rank ?? 128, size = options.stepSize ?? 1024, steps = options.steps ?? 5;
  const rows: BenchRow[] = [];
  const row = (name: string, unit: string, value: number, baseline?: number) =>
    rows.push(
      baseline === undefined
        ? { name, unit, value }
        : { name, unit, value, baseline, ratio: value / baseline },
    );

  for (const [m, n] of shapes) {
    const g = lowRankPlusNoise(m, n, rank, 1);
    const side = m >= n ? "right" : "left"; // galore "std"
    const [exact, tExact] = time(() => topSingularSubspace(g, rank, side, { method: "exact" }));
    const [fast, tFast] = time(() => topSingularSubspace(g, rank, side));
    // warm refresh: the next gradient of a slowly drifting subspace, seeded with the previous projector
    const g2 = tf.tidy(() => tf.add(g, tf.mul(lowRankPlusNoise(m, n, rank, 9), 0.05))) as tf.Tensor2D;
    const exact2 = topSingularSubspace(g2, rank, side, { method: "exact" });
    const [warm, tWarm] = time(() => topSingularSubspace(g2, rank, side, { init: fast }));
    row(`refresh ${m}x${n} r${rank}: randomized (cold) vs exact`, "s", tFast, tExact);
    row(`refresh ${m}x${n} r${rank}: randomized (warm-started) vs exact`, "s", tWarm, tExact);
    row(
      `refresh ${m}x${n}: largest principal angle, cold randomized vs exact`,
      "rad",
      principalAngles(exact, fast),
    );
    row(
      `refresh ${m}x${n}: largest principal angle, warm randomized vs exact`,
      "rad",
      principalAngles(exact2, warm),
    );
    tf.dispose([g, g2, exact, fast, exact2, warm]);
  }

  // Step time on one [size, size] weight: AdamW vs GaLore (refresh amortised over 200 steps).
  const name = "layers.0.mlp.up_proj.weight";
  const g = lowRankPlusNoise(size, size, rank, 3);
  const timeSteps = (opt: ReturnType<typeof createAdamW>) => {
    const w = tf.variable(tf.zeros([size, size]));
    const [, tFirst] = time(() => {
      opt.step([{ name, variable: w, grad: g }], 1e-3);
      w.dataSync();
    });
    const [, t] = time(() => {
      for (let i = 0; i < steps; i++) opt.step([{ name, variable: w, grad: g }], 1e-3);
      w.dataSync();
    });
    const bytes = opt.stateBytes();
    opt.dispose();
    w.dispose();
    return { first: tFirst, step: t / steps, bytes };
  };
  const adam = timeSteps(createAdamW());
  const galore = timeSteps(createGaLoreAdamW({ r: rank, updateProjGap: 200 }));
  const galore8 = timeSteps(createGaLoreAdamW({ r: rank, updateProjGap: 200, eightBit: true }));
  const amortised = galore.step + Math.max(0, galore.first - galore.step) / 200;
  const amortised8 = galore8.step + Math.max(0, galore8.first - galore8.step) / 200;
  row(`step ${size}x${size}: GaLore r${rank} (amortised, gap 200) vs AdamW`, "s", amortised, adam.step);
  row(`step ${size}x${size}: GaLore8bit r${rank} (amortised, gap 200) vs AdamW`, "s", amortised8, adam.step);
  row(`state ${size}x${size}: GaLore r${rank} vs AdamW`, "bytes", galore.bytes, adam.bytes);
  row(`state ${size}x${size}: GaLore8bit r${rank} vs AdamW`, "bytes", galore8.bytes, adam.bytes);
  g.dispose();
  return rows;
}

if (import.meta.main) {
  const rows = await runGaloreBench();
  const fmt = (x: number | undefined) =>
    x === undefined
      ? ""
      : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3)
      ? x.toExponential(3)
      : x.toFixed(4);
  console.log(["name", "unit", "value", "baseline", "ratio"].join(" | "));
  for (const r of rows) {
    console.log([r.name, r.unit, fmt(r.value), fmt(r.baseline), fmt(r.ratio)].join(" | "));
  }
}

/**
 * Full fine-tuning of the embedded model with AdamW, 8-bit AdamW, GaLore and
 * GaLore 8-bit + layer-wise, same data and steps: final losses, optimizer-state
 * bytes, peak step memory and step time, each as a ratio to AdamW.
 * Run: `deno run -A bench/optimizer_compare.ts [--steps 100] [--seeds 1,2,3] [--cases 2,4,5] [--clip]` (prints
 * a markdown table per seed, and with several seeds each case's eval loss against AdamW's: mean, min, max).
 * @module
 */
import {
  EMBEDDED_DATA_DIR,
  EMBEDDED_MODEL_DIR,
  initEngine,
  loadModel,
  loadTokenizer,
  readJsonl,
  train,
  type TrainOptions,
} from "../mod.ts";
import type { BenchRow } from "./matmul_bench.ts";

/** One optimizer setting. */
export interface OptimizerCase {
  name: string;
  options: Partial<TrainOptions>;
}

const GALORE = { r: 32, updateProjGap: 10, scale: 2 };

/**
 * The compared settings (GaLore rank = hidden / 4 = 32, as in issue 5). "+ residual" adds
 * Fira's scaled out-of-subspace gradient (issue 16); the layer-wise case clips with the
 * previous step's norm and checks each block before its own update, so it runs one backward
 * pass per step (see lib/train/layerwise_clip.ts).
 */
export const CASES: OptimizerCase[] = [
  { name: "AdamW (full)", options: { optimizer: "adamw" } },
  { name: "AdamW 8-bit", options: { optimizer: "adamw8bit" } },
  { name: "GaLore r32", options: { optimizer: "galore", galore: GALORE } },
  { name: "GaLore r32 + residual", options: { optimizer: "galore", galore: { ...GALORE, residual: true } } },
  {
    name: "GaLore 8-bit r32 + residual",
    options: { optimizer: "galore8bit", galore: { ...GALORE, residual: true } },
  },
  {
    name: "GaLore 8-bit r32 layer-wise + residual",
    options: {
      optimizer: "galore8bit",
      galore: { ...GALORE, residual: true, layerwise: true },
      layerwiseClip: "previous",
      divergence: { layerwiseCheck: "per-block" },
    },
  },
];

/** Issue 16: layer-wise 8-bit GaLore + residual under each layer-wise clipping mode (`--clip`). */
export const CLIP_CASES: OptimizerCase[] = [
  CASES[0],
  ...([["no clipping", { maxGradNorm: 0 }], ["prepass", {}], ["previous", { layerwiseClip: "previous" }], [
    "per-block",
    { layerwiseClip: "per-block" },
  ]] as const).map(([name, o]) => ({
    name: `GaLore 8-bit layer-wise + residual, clip ${name}`,
    options: {
      optimizer: "galore8bit" as const,
      galore: { ...GALORE, residual: true, layerwise: true },
      divergence: { layerwiseCheck: "per-block" as const },
      ...o,
    },
  })),
];

/** Result of one case. */
export interface CaseResult {
  name: string;
  finalLoss: number;
  evalLoss: number;
  optimizerBytes: number;
  peakBytes: number;
  secondsPerStep: number;
  losses: number[];
}

/** Trains a fresh copy of the embedded model with each case (data order from `shuffleSeed`). */
export async function compareOptimizers(steps = 100, cases = CASES, shuffleSeed = 1): Promise<CaseResult[]> {
  await initEngine();
  const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const data = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`);
  const evalData = (await readJsonl(`${EMBEDDED_DATA_DIR}/herald_eval.jsonl`)).slice(0, 50);
  const out: CaseResult[] = [];
  for (const c of cases) {
    const model = await loadModel(EMBEDDED_MODEL_DIR);
    const h = await train(model, data, {
      tokenizer,
      steps,
      batchSize: 16,
      lr: 1e-3,
      warmupSteps: 5,
      evalData,
      shuffleSeed,
      ...c.options,
    });
    const last = h.slice(-10);
    out.push({
      name: c.name,
      finalLoss: last.reduce((s, r) => s + r.loss, 0) / last.length,
      evalLoss: h.at(-1)!.evalLoss!,
      // Device-held plus host-held (8-bit) state: the model is dense, so host memory is the state's.
      optimizerBytes: h.at(-1)!.memory.breakdown!.optimizerStates + h.at(-1)!.memory.breakdown!.hostOffloaded,
      peakBytes: Math.max(...h.map((r) => r.memory.peakTensorBytes ?? 0)),
      secondsPerStep: h.slice(1).reduce((s, r) => s + r.seconds, 0) / (h.length - 1),
      losses: h.map((r) => r.loss),
    });
    model.dispose();
  }
  return out;
}

/** Bench rows (ratios against AdamW). */
export async function runOptimizerCompare(steps = 100): Promise<BenchRow[]> {
  const res = await compareOptimizers(steps);
  const base = res[0];
  return res.flatMap((r) => [
    {
      name: `${r.name}: final train loss`,
      unit: "nats",
      value: r.finalLoss,
      baseline: base.finalLoss,
      ratio: r.finalLoss / base.finalLoss,
    },
    {
      name: `${r.name}: eval loss`,
      unit: "nats",
      value: r.evalLoss,
      baseline: base.evalLoss,
      ratio: r.evalLoss / base.evalLoss,
    },
    {
      name: `${r.name}: optimizer state`,
      unit: "bytes",
      value: r.optimizerBytes,
      baseline: base.optimizerBytes,
      ratio: r.optimizerBytes / base.optimizerBytes,
    },
    {
      name: `${r.name}: peak step tensors`,
      unit: "bytes",
      value: r.peakBytes,
      baseline: base.peakBytes,
      ratio: r.peakBytes / base.peakBytes,
    },
    {
      name: `${r.name}: step time`,
      unit: "s",
      value: r.secondsPerStep,
      baseline: base.secondsPerStep,
      ratio: r.secondsPerStep / base.secondsPerStep,
    },
  ]);
}

/** Mean and spread over seeds of each case's eval loss relative to AdamW's on the same seed. */
export interface SeedSummary {
  name: string;
  /** Eval loss per seed. */
  evalLoss: number[];
  /** Mean of the per-seed ratios to AdamW's eval loss, minus 1. */
  meanRel: number;
  /** Smallest and largest per-seed ratio, minus 1. */
  minRel: number;
  maxRel: number;
}

/**
 * Summarises runs over seeds: `runs[s][c]` is case `c` on seed `s`, case 0 the baseline.
 *
 * @example
 * ```ts
 * import { summariseSeeds } from "./optimizer_compare.ts";
 * const r = (name: string, evalLoss: number) => ({ name, evalLoss, finalLoss: 0, optimizerBytes: 0,
 *   peakBytes: 0, secondsPerStep: 0, losses: [] });
 * const s = summariseSeeds([[r("a", 1), r("b", 1.02)], [r("a", 2), r("b", 2.08)]]);
 * if (Math.abs(s[1].meanRel - 0.03) > 1e-12 || Math.abs(s[1].maxRel - 0.04) > 1e-12) throw new Error("mean of ratios");
 * ```
 */
export function summariseSeeds(runs: CaseResult[][]): SeedSummary[] {
  return runs[0].map((c, j) => {
    const rel = runs.map((seed) => seed[j].evalLoss / seed[0].evalLoss - 1);
    return {
      name: c.name,
      evalLoss: runs.map((seed) => seed[j].evalLoss),
      meanRel: rel.reduce((a, b) => a + b, 0) / rel.length,
      minRel: Math.min(...rel),
      maxRel: Math.max(...rel),
    };
  });
}

if (import.meta.main) {
  const arg = (flag: string) => Deno.args.includes(flag) ? Deno.args[Deno.args.indexOf(flag) + 1] : undefined;
  const steps = Number(arg("--steps") ?? 100);
  const seeds = (arg("--seeds") ?? "1").split(",").map(Number);
  // --cases 2,4: indices into CASES (AdamW, case 0, is always run: the baseline).
  const only = arg("--cases")?.split(",").map(Number);
  // --clip: the layer-wise clipping modes (CLIP_CASES) instead of CASES.
  const all = Deno.args.includes("--clip") ? CLIP_CASES : CASES;
  const cases = all.filter((_, i) => i === 0 || !only || only.includes(i));
  const runs: CaseResult[][] = [];
  for (const seed of seeds) {
    const res = await compareOptimizers(steps, cases, seed);
    runs.push(res);
    const b = res[0];
    console.log(`\nshuffleSeed ${seed}`);
    console.log(
      `| optimizer (${steps} steps) | train loss (last 10) | eval loss | optimizer state | peak step tensors | s/step |`,
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (const r of res) {
      console.log(
        `| ${r.name} | ${r.finalLoss.toFixed(4)} (${(100 * (r.finalLoss / b.finalLoss - 1)).toFixed(1)}%) | ${
          r.evalLoss.toFixed(4)
        } (${(100 * (r.evalLoss / b.evalLoss - 1)).toFixed(1)}%) | ` +
          `${(r.optimizerBytes / 1024).toFixed(0)} KiB (x${
            (r.optimizerBytes / b.optimizerBytes).toFixed(2)
          }) | ` +
          `${(r.peakBytes / 2 ** 20).toFixed(1)} MiB (x${(r.peakBytes / b.peakBytes).toFixed(2)}) | ${
            r.secondsPerStep.toFixed(3)
          } (x${(r.secondsPerStep / b.secondsPerStep).toFixed(2)}) |`,
      );
    }
  }
  if (seeds.length > 1) {
    console.log(
      `\n| optimizer, seeds ${seeds.join(", ")} | eval loss per seed | vs AdamW: mean (min .. max) |`,
    );
    console.log("| --- | --- | ---: |");
    const pct = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)} %`;
    for (const s of summariseSeeds(runs)) {
      console.log(
        `| ${s.name} | ${s.evalLoss.map((x) => x.toFixed(4)).join(", ")} | ${pct(s.meanRel)} (${
          pct(s.minRel)
        } .. ${pct(s.maxRel)}) |`,
      );
    }
  }
}

/**
 * Full fine-tuning of the embedded model with AdamW, 8-bit AdamW, GaLore and
 * GaLore 8-bit + layer-wise, same data and steps: final losses, optimizer-state
 * bytes, peak step memory and step time, each as a ratio to AdamW.
 * Run: `deno run -A bench/optimizer_compare.ts [--steps 60]` (prints a markdown table).
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

/** The compared settings (GaLore rank = hidden / 4 = 32, as in issue 5). */
export const CASES: OptimizerCase[] = [
  { name: "AdamW (full)", options: { optimizer: "adamw" } },
  { name: "AdamW 8-bit", options: { optimizer: "adamw8bit" } },
  { name: "GaLore r32", options: { optimizer: "galore", galore: { r: 32, updateProjGap: 10, scale: 2 } } },
  {
    name: "GaLore 8-bit r32 layer-wise",
    options: {
      optimizer: "galore8bit",
      galore: { r: 32, updateProjGap: 10, scale: 2, layerwise: true },
      maxGradNorm: 0,
    },
  },
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

/** Trains a fresh copy of the embedded model with each case. */
export async function compareOptimizers(steps = 100, cases = CASES): Promise<CaseResult[]> {
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
      shuffleSeed: 1,
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

if (import.meta.main) {
  const steps = Deno.args.includes("--steps") ? Number(Deno.args[Deno.args.indexOf("--steps") + 1]) : 100;
  const res = await compareOptimizers(steps);
  const b = res[0];
  console.log(
    `| optimizer (${steps} steps) | train loss (last 10) | eval loss | optimizer state | peak step tensors | s/step |`,
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of res) {
    console.log(
      `| ${r.name} | ${r.finalLoss.toFixed(3)} (${(100 * (r.finalLoss / b.finalLoss - 1)).toFixed(1)}%) | ${
        r.evalLoss.toFixed(3)
      } | ` +
        `${(r.optimizerBytes / 1024).toFixed(0)} KiB (x${
          (r.optimizerBytes / b.optimizerBytes).toFixed(2)
        }) | ` +
        `${(r.peakBytes / 2 ** 20).toFixed(1)} MiB (x${(r.peakBytes / b.peakBytes).toFixed(2)}) | ${
          r.secondsPerStep.toFixed(3)
        } |`,
    );
  }
}

/**
 * `deno task demo`: the main job on the embedded default model.
 *
 * Loads the embedded model, shows a generation and the herald-task score before
 * fine-tuning, fine-tunes all parameters with gradient accumulation, shows the
 * loss, the score after, peak memory, and writes an HTML report with plotly
 * charts to `out/demo/`.
 *
 * Options: --steps N (default 40), --out DIR (default out/demo), --backend NAME.
 * @module
 */
import {
  display,
  EMBEDDED_DATA_DIR,
  EMBEDDED_MODEL_DIR,
  exactMatch,
  formatBytes,
  generate,
  initEngine,
  liveTrainingChart,
  loadModel,
  loadTokenizer,
  lossChart,
  memoryChart,
  readJsonl,
  table,
  train,
  writeHtml,
} from "../mod.ts";
import type { BackendName, StepRecord } from "../mod.ts";

const args = Deno.args;
const opt = (k: string, d: string) => (args.indexOf(k) >= 0 ? args[args.indexOf(k) + 1] : d);
const steps = Number(opt("--steps", "40"));
const lr = Number(opt("--lr", "1e-3"));
const outDir = opt("--out", "out/demo");
const t0 = performance.now();

const engine = await initEngine({ backend: opt("--backend", "auto") as BackendName });
console.log(`engine: ${engine.reason}`);

const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
const model = await loadModel(EMBEDDED_MODEL_DIR);
await display(table(model.summary() as unknown as Record<string, unknown>[], { title: "Embedded model" }));

const trainData = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`) as {
  prompt: string;
  completion: string;
}[];
const evalData = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_eval.jsonl`) as {
  prompt: string;
  completion: string;
}[];
const scoreSet = evalData.slice(0, 50);

const sample = scoreSet[0].prompt;
console.log(`\nprompt: ${JSON.stringify(sample)}`);
console.log(
  `before: ${JSON.stringify(generate(model, tokenizer, sample, { maxNewTokens: 24, stop: ["\n"] }))}`,
);
const before = exactMatch(model, tokenizer, scoreSet);
console.log(
  `herald exact match before fine-tuning: ${(100 * before.accuracy).toFixed(0)}% of ${scoreSet.length}`,
);

console.log(
  `\nfine-tuning all parameters: ${steps} steps, micro-batch 8 × 2 accumulated (effective batch 16)`,
);
const chart = liveTrainingChart({ every: 5, title: "demo fine-tune" });
const history: StepRecord[] = await train(model, trainData, {
  tokenizer,
  steps,
  batchSize: 8,
  gradAccumSteps: 2,
  lr,
  warmupSteps: 4,
  schedule: "cosine",
  evalData: evalData.slice(50),
  evalEvery: 10,
  onStep: (r) => chart.onStep(r),
});
await chart.finish();

const after = exactMatch(model, tokenizer, scoreSet);
console.log(
  `\nafter:  ${JSON.stringify(generate(model, tokenizer, sample, { maxNewTokens: 24, stop: ["\n"] }))}`,
);
console.log(
  `herald exact match after fine-tuning: ${(100 * after.accuracy).toFixed(0)}% of ${scoreSet.length}`,
);

const peakTensor = Math.max(...history.map((h) => h.memory.peakTensorBytes ?? h.memory.tensorBytes));
const peakRss = Math.max(...history.map((h) => h.memory.rssBytes));
const tokens = history.reduce((s, h) => s + h.tokens, 0);
const secs = history.reduce((s, h) => s + h.seconds, 0);
await display(table([
  {
    metric: "loss (first → last step)",
    value: `${history[0].loss.toFixed(3)} → ${history.at(-1)!.loss.toFixed(3)}`,
  },
  { metric: "eval loss (last)", value: history.at(-1)!.evalLoss?.toFixed(3) ?? "" },
  {
    metric: "exact match before → after",
    value: `${(100 * before.accuracy).toFixed(0)}% → ${(100 * after.accuracy).toFixed(0)}%`,
  },
  { metric: "training tokens/s", value: (tokens / secs).toFixed(0) },
  { metric: "peak tensor memory (during a step)", value: formatBytes(peakTensor) },
  { metric: "peak process RSS", value: formatBytes(peakRss) },
], { title: "Demo summary" }));

await Deno.mkdir(outDir, { recursive: true });
await Deno.writeTextFile(`${outDir}/history.json`, JSON.stringify(history, null, 1));
await writeHtml(`${outDir}/report.html`, [lossChart(history), memoryChart(history)], {
  title: "nbtune demo",
});
console.log(
  `\nwrote ${outDir}/report.html and ${outDir}/history.json (${
    ((performance.now() - t0) / 1000).toFixed(0)
  } s total)`,
);
model.dispose();

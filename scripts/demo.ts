/**
 * `deno task demo`: the main job on the embedded default model.
 *
 * 1. Loads the embedded model with its attention/MLP weights quantized to NF4
 *    (double quantization) and shows a generation and the herald-task score.
 * 2. QLoRA: attaches LoRA adapters and fine-tunes them with gradient
 *    accumulation (micro-batch 8 × 2), printing loss as it goes.
 * 3. Shows the generation and the score after, peak memory and throughput.
 * 4. QDyLoRA: one DyLoRA run on the same 4-bit base, then a rank sweep (exact
 *    match at every rank 1..8) — pick the best rank after a single run.
 * 5. Writes `out/demo/report.html` (loss, memory and rank-sweep charts) and
 *    `out/demo/history.json`.
 *
 * Options: `deno task demo --help`.
 * @module
 */
import type { BackendName, StepRecord } from "../mod.ts";
import { defineCli, runCli } from "./_cli.ts";

/** The demo's command line. */
const DEMO_CLI = defineCli({
  name: "demo",
  summary: "QLoRA fine-tune of the embedded model on the herald task, then a QDyLoRA rank sweep; " +
    "writes a report with loss, memory and rank-sweep charts.",
  usage: "deno task demo [options]",
  options: {
    steps: { type: "integer", default: 300, min: 1, description: "fine-tuning steps", example: "--steps 20" },
    lr: { type: "number", default: 6e-3, description: "peak learning rate", example: "--lr 3e-3" },
    out: {
      type: "string",
      default: "out/demo",
      placeholder: "DIR",
      description: "folder for report.html and history.json",
      example: "--out out/demo2",
    },
    backend: {
      type: "string",
      default: "auto",
      choices: ["auto", "wasm", "cpu", "webgpu", "tensorflow"],
      description: "tfjs backend",
      example: "--backend cpu",
    },
    sweep: {
      type: "boolean",
      default: true,
      description: "run the QDyLoRA rank sweep after the QLoRA fine-tune",
      example: "--no-sweep",
    },
  },
  examples: ["deno task demo", "deno task demo --steps 20 --no-sweep", "deno task demo --backend cpu"],
});

if (import.meta.main) await runCli(DEMO_CLI, ({ values }) => demo(values));

async function demo(
  { steps, lr, out: outDir, backend, sweep }: {
    steps: number;
    lr: number;
    out: string;
    backend: string;
    sweep: boolean;
  },
): Promise<void> {
  const {
    attachDyLoRA,
    attachLoRA,
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
    rankSweep,
    rankSweepChart,
    readJsonl,
    table,
    train,
    trainableParametersLine,
    writeHtml,
  } = await import("../mod.ts"); // after parsing, so --help and usage errors answer without loading tfjs
  const t0 = performance.now();
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const TARGETS = "all-linear" as const;

  const engine = await initEngine({ backend: backend as BackendName });
  console.log(`engine: ${engine.reason}`);

  const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
  await display(
    table(model.summary() as unknown as Record<string, unknown>[], { title: "Embedded model, NF4 base" }),
  );

  type Task = { prompt: string; completion: string };
  const trainData = await readJsonl<Task>(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`);
  const evalData = await readJsonl<Task>(`${EMBEDDED_DATA_DIR}/herald_eval.jsonl`);
  const scoreSet = evalData.slice(0, 50);
  const heldOutLoss = evalData.slice(50, 114);

  const sample = scoreSet[0].prompt;
  const show = (label: string) =>
    console.log(
      `${label} ${JSON.stringify(generate(model, tokenizer, sample, { maxNewTokens: 24, stop: ["\n"] }))}`,
    );
  console.log(`\nprompt: ${JSON.stringify(sample)}`);
  show("before:");
  const before = exactMatch(model, tokenizer, scoreSet);
  console.log(`herald exact match before fine-tuning: ${pct(before.accuracy)} of ${scoreSet.length}`);

  attachLoRA(model, { r: 8, alpha: 16, dropout: 0.05, targetModules: TARGETS });
  console.log(`\nQLoRA: ${trainableParametersLine(model)}`);
  console.log(`fine-tuning ${steps} steps, micro-batch 8 × 2 accumulated (effective batch 16)`);
  const chart = liveTrainingChart({ every: 25, title: "QLoRA fine-tune" });
  const history: StepRecord[] = await train(model, trainData, {
    tokenizer,
    steps,
    batchSize: 8,
    gradAccumSteps: 2,
    lr,
    warmupSteps: 10,
    schedule: "cosine",
    evalData: heldOutLoss,
    evalEvery: 50,
    onStep: (r) => chart.onStep(r),
  });
  await chart.finish();

  const after = exactMatch(model, tokenizer, scoreSet);
  console.log();
  show("after: ");
  console.log(`herald exact match after fine-tuning: ${pct(after.accuracy)} of ${scoreSet.length}`);
  model.dispose();

  const figures = [
    lossChart(history, { title: "QLoRA loss" }),
    memoryChart(history, { title: "QLoRA memory" }),
  ];
  let sweepRows: { rank: number; loss: number; score?: number }[] = [];
  let bestRank = 0;
  if (sweep) {
    console.log(`\nQDyLoRA: one run with ranks 1..8 on the same NF4 base (${steps} steps)`);
    const dy = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    attachDyLoRA(dy, { r: 8, alpha: 16, targetModules: TARGETS });
    await train(dy, trainData, { tokenizer, steps, batchSize: 8, gradAccumSteps: 2, lr, warmupSteps: 10 });
    const result = rankSweep(dy, heldOutLoss, undefined, {
      tokenizer,
      scorer: (m) => exactMatch(m, tokenizer, scoreSet).accuracy,
    });
    sweepRows = result.rows;
    bestRank = result.best;
    await display(table(
      result.rows.map((r) => ({
        rank: r.rank,
        "eval loss": r.loss.toFixed(3),
        "exact match": pct(r.score ?? 0),
      })),
      { title: `QDyLoRA rank sweep (best rank: ${result.best})` },
    ));
    figures.push(rankSweepChart(result));
    dy.dispose();
  }

  const peakTensor = Math.max(...history.map((h) => h.memory.peakTensorBytes ?? h.memory.tensorBytes));
  const peakRss = Math.max(...history.map((h) => h.memory.rssBytes));
  const tokens = history.reduce((s, h) => s + h.tokens, 0);
  const secs = history.reduce((s, h) => s + h.seconds, 0);
  const last = history.at(-1)!;
  await display(table([
    { metric: "loss (first → last step)", value: `${history[0].loss.toFixed(3)} → ${last.loss.toFixed(3)}` },
    { metric: "held-out loss (last)", value: last.evalLoss?.toFixed(3) ?? "" },
    { metric: "QLoRA exact match before → after", value: `${pct(before.accuracy)} → ${pct(after.accuracy)}` },
    ...(sweep
      ? [{
        metric: "QDyLoRA best rank (exact match)",
        value: `r=${bestRank} (${pct(sweepRows.find((r) => r.rank === bestRank)?.score ?? 0)})`,
      }]
      : []),
    { metric: "training tokens/s", value: (tokens / secs).toFixed(0) },
    { metric: "peak tensor memory (during a step)", value: formatBytes(peakTensor) },
    {
      metric: "host memory (4-bit base weights)",
      value: formatBytes(last.memory.breakdown?.hostOffloaded ?? 0),
    },
    { metric: "peak process RSS", value: formatBytes(peakRss) },
  ], { title: "Demo summary" }));

  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(
    `${outDir}/history.json`,
    JSON.stringify({ qlora: history, rankSweep: sweepRows }, null, 1),
  );
  await writeHtml(`${outDir}/report.html`, figures, {
    title: "nbtune demo: QLoRA and QDyLoRA on the embedded model",
  });
  console.log(
    `\nwrote ${outDir}/report.html and ${outDir}/history.json (${
      ((performance.now() - t0) / 1000).toFixed(0)
    } s total)`,
  );
}

/**
 * `deno task demo`: the main job on the embedded default model.
 *
 * 1. Loads the embedded model with its attention/MLP weights quantized to NF4
 *    (double quantization) and shows a generation and the herald-task score.
 * 2. QLoRA: attaches LoRA adapters and fine-tunes them with gradient
 *    accumulation (micro-batch 8 × 2), printing loss as it goes.
 * 3. Shows the generation and the score after, peak memory and throughput.
 * 4. QDyLoRA: one DyLoRA run on the same 4-bit base (`--sweep-steps`, at most
 *    the QLoRA run's), then a rank sweep (exact match at every rank 1..8) —
 *    pick the best rank after a single run. Every long phase prints progress.
 * 5. Writes `out/demo/report.html` — the settings, before/after generations,
 *    scores, peak memory, tokens/s and time, then the loss (log axis, smoothed),
 *    memory in two views and the rank sweep — and `out/demo/history.json`, and
 *    prints the total time.
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
    "sweep-steps": {
      type: "integer",
      default: 300,
      min: 1,
      description: "QDyLoRA fine-tuning steps before the rank sweep (at most --steps)",
      example: "--sweep-steps 100",
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

if (import.meta.main) {
  await runCli(DEMO_CLI, ({ values }) => demo({ ...values, sweepSteps: values["sweep-steps"] }));
}

async function demo(
  { steps, lr, out: outDir, backend, sweep, sweepSteps: sweepStepsOption }: {
    steps: number;
    sweepSteps: number;
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
    memoryPartsChart,
    memoryTotalChart,
    progress,
    rankSweep,
    rankSweepChart,
    readJsonl,
    reportLossChart,
    table,
    train,
    trainableParametersLine,
    writeHtml,
  } = await import("../mod.ts"); // after parsing, so --help and usage errors answer without loading tfjs
  const t0 = performance.now();
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
  const sweepSteps = Math.min(sweepStepsOption, steps);
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

  const samples = scoreSet.slice(0, 4);
  const reply = (prompt: string) => generate(model, tokenizer, prompt, { maxNewTokens: 24, stop: ["\n"] });
  const repliesBefore = samples.map((r) => reply(r.prompt));
  console.log(`\nprompt: ${JSON.stringify(samples[0].prompt)}`);
  console.log(`before: ${JSON.stringify(repliesBefore[0])}`);
  console.log(`scoring exact match on ${scoreSet.length} held-out prompts… (${elapsed()})`);
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

  console.log(`\nscoring exact match on ${scoreSet.length} held-out prompts… (${elapsed()})`);
  const after = exactMatch(model, tokenizer, scoreSet);
  const repliesAfter = samples.map((r) => reply(r.prompt));
  console.log(`after:  ${JSON.stringify(repliesAfter[0])}`);
  console.log(`herald exact match after fine-tuning: ${pct(after.accuracy)} of ${scoreSet.length}`);
  model.dispose();

  const figures = [
    reportLossChart(history, { title: `QLoRA training loss (${steps} steps)` }),
    memoryPartsChart(history, { title: "QLoRA memory: the parts the method changes (peak step)" }),
    memoryTotalChart(history, { title: "QLoRA memory: the whole step at its peak, activations included" }),
  ];
  let sweepRows: { rank: number; loss: number; score?: number }[] = [];
  let bestRank = 0;
  if (sweep) {
    console.log(
      `\nQDyLoRA: one run with ranks 1..8 on the same NF4 base (${sweepSteps} steps) (${elapsed()})`,
    );
    const dy = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    attachDyLoRA(dy, { r: 8, alpha: 16, targetModules: TARGETS });
    const dyBar = progress(sweepSteps, { label: "QDyLoRA steps" });
    await train(dy, trainData, {
      tokenizer,
      steps: sweepSteps,
      batchSize: 8,
      gradAccumSteps: 2,
      lr,
      warmupSteps: 10,
      measureMemory: false,
      onStep: (r) => dyBar.tick(1, `loss ${r.loss.toFixed(3)}`),
    });
    await dyBar.done();
    const sweepBar = progress(8, { label: "rank sweep (eval loss + exact match per rank)" });
    const result = rankSweep(dy, heldOutLoss, undefined, {
      tokenizer,
      scorer: (m) => {
        const accuracy = exactMatch(m, tokenizer, scoreSet).accuracy;
        sweepBar.tick(1, `exact match ${pct(accuracy)}`);
        return accuracy;
      },
    });
    await sweepBar.done();
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
    figures.push(rankSweepChart(result, {
      title: `QDyLoRA rank sweep: one ${sweepSteps}-step run served at every rank`,
      scoreLabel: "exact match, %",
      scoreScale: 100,
    }));
    dy.dispose();
  }

  const peakTensor = Math.max(...history.map((h) => h.memory.peakTensorBytes ?? h.memory.tensorBytes));
  const peakRss = Math.max(...history.map((h) => h.memory.rssBytes));
  const tokens = history.reduce((s, h) => s + h.tokens, 0);
  const secs = history.reduce((s, h) => s + h.seconds, 0);
  const last = history.at(-1)!;
  const summary = table([
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
    { metric: "time so far (whole demo)", value: elapsed() },
  ], { title: "Results" });
  await display(summary);
  const settings = table([
    {
      setting: "model",
      value: `embedded Llama (${
        EMBEDDED_MODEL_DIR.replace(/^.*[\\/]/, "")
      }), base in NF4 with double quantization`,
    },
    {
      setting: "task",
      value: `herald: ${trainData.length} training pairs; exact match on ${scoreSet.length} held-out prompts`,
    },
    { setting: "adapters", value: `LoRA r=8, alpha 16, dropout 0.05, on ${TARGETS} layers` },
    { setting: "QLoRA steps", value: `${steps} (micro-batch 8 × 2 accumulated = 16 per step)` },
    { setting: "learning rate", value: `${lr}, 10 warmup steps, cosine decay` },
    { setting: "held-out loss", value: `every 50 steps on ${heldOutLoss.length} pairs` },
    {
      setting: "QDyLoRA",
      value: sweep ? `max rank 8, ${sweepSteps} steps, then ranks 1..8 scored` : "skipped (--no-sweep)",
    },
    { setting: "engine", value: engine.reason },
  ], { title: "Settings" });
  const generations = table(
    samples.map((r, i) => ({
      prompt: r.prompt.trim(),
      expected: r.completion.trim(),
      "before fine-tuning": repliesBefore[i],
      "after fine-tuning": repliesAfter[i],
    })),
    { title: "Generations before and after the QLoRA fine-tune" },
  );

  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(
    `${outDir}/history.json`,
    JSON.stringify({ qlora: history, rankSweep: sweepRows }, null, 1),
  );
  await writeHtml(`${outDir}/report.html`, [settings, summary, generations, ...figures], {
    title: "nbtune demo: QLoRA and QDyLoRA on the embedded model",
  });
  console.log(`\nwrote ${outDir}/report.html and ${outDir}/history.json`);
  console.log(`demo total time: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/**
 * A training chart that redraws in place while the trainer runs: pass `chart.onStep` as the trainer's
 * `onStep` callback and `await chart.finish()` after training. In a notebook it is one output (a Jupyter
 * display id) updated every `every` steps with loss, eval loss, lr and memory; elsewhere it prints one line
 * per `every` steps.
 *
 * @module
 */

import type { StepRecord } from "../train/types.ts";
import { display, isJupyter } from "./display.ts";
import { trainingChart } from "./charts.ts";
import { ensurePlotlySetup, plotlyBundle, type PlotlyFigure } from "./plotly.ts";
import { formatBytes } from "./tables.ts";
import { formatDuration } from "./progress.ts";
import { uniqueId } from "./_html.ts";
import { defineOptions, type FieldsOf, integer, number, string } from "../options/schema.ts";

/** Options for {@linkcode liveTrainingChart}. */
export interface LiveTrainingChartOptions {
  /** Redraw (or print a line) every this many steps; the first step and `finish()` always redraw.
   * @default 5 */
  every?: number;
  /** Chart title.
   * @default "Training" */
  title?: string;
  /** Chart height in pixels.
   * @default 560 */
  height?: number;
}

/** A live chart; `onStep` and `finish` are bound, so they can be passed around as plain functions. */
export interface LiveTrainingChart {
  /** Records a step and redraws when due; resolves once the redraw was sent. */
  onStep: (record: StepRecord) => Promise<void>;
  /** Redraws with every recorded step (and prints a summary outside Jupyter). */
  finish: () => Promise<void>;
  /** The steps recorded so far. */
  readonly history: readonly StepRecord[];
  /** The Jupyter display id of the chart output. */
  readonly displayId: string;
}

/**
 * Marker in the figure's `layout.meta` so checks of an executed notebook can find live charts and see
 * whether their final update arrived (scripts/run_notebooks.py reads it).
 */
export interface LiveChartMeta {
  /** The display id. */
  live: string;
  /** Steps recorded when this figure was drawn. */
  steps: number;
  /** Whether `finish()` drew it. */
  finished: boolean;
}

/** The schema of {@linkcode liveTrainingChart}'s options. */
export const liveTrainingChartSchema = defineOptions(
  "liveTrainingChart",
  {
    every: integer("Redraw (or print a line) every this many steps.", { min: 1, default: 5 }),
    title: string("Chart title.", { default: "Training" }),
    height: number("Chart height in pixels.", { above: 0, default: 560 }),
  } satisfies FieldsOf<LiveTrainingChartOptions>,
);

function resolveLiveOptions(options: LiveTrainingChartOptions) {
  return liveTrainingChartSchema.parse(options);
}

/**
 * One step as a compact line (what the terminal mode prints).
 *
 * @example
 * ```ts
 * const line = stepSummary({ step: 10, loss: 2.34561, lr: 1e-4, tokens: 512, seconds: 0.5, gradNorm: 1,
 *   memory: { tensorBytes: 2 ** 20, numTensors: 3, heapBytes: 0, rssBytes: 2 ** 28 } });
 * if (line !== "step   10 | loss 2.3456 | lr 1.00e-4 | 0.50 s/step | tensors 1.0 MiB | rss 256.0 MiB") {
 *   throw new Error(line);
 * }
 * ```
 */
export function stepSummary(record: StepRecord): string {
  return [
    `step ${String(record.step).padStart(4)}`,
    `loss ${record.loss.toFixed(4)}`,
    ...(record.evalLoss === undefined ? [] : [`eval ${record.evalLoss.toFixed(4)}`]),
    `lr ${record.lr.toExponential(2)}`,
    `${record.seconds.toFixed(2)} s/step`,
    `tensors ${formatBytes(record.memory.tensorBytes)}`,
    `rss ${formatBytes(record.memory.rssBytes)}`,
  ].join(" | ");
}

/**
 * Creates a live training chart.
 *
 * @example Outside Jupyter it prints a line every `every` steps and a summary at the end
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * const printed: string[] = [];
 * const log = console.log;
 * console.log = (line: string) => printed.push(line);
 * try {
 *   const chart = liveTrainingChart({ every: 5 });
 *   for (const record of syntheticHistory(10)) await chart.onStep(record);
 *   await chart.finish();
 * } finally {
 *   console.log = log;
 * }
 * if (printed.length !== 4 || !printed[2].startsWith("step   10 | loss")) throw new Error(printed.join("\n"));
 * ```
 */
export function liveTrainingChart(options: LiveTrainingChartOptions = {}): LiveTrainingChart {
  const { every, title, height } = resolveLiveOptions(options);
  const displayId = uniqueId("nbtune-live");
  const history: StepRecord[] = [];
  const jupyter = isJupyter();
  let shown = false;
  let queue: Promise<void> = Promise.resolve();

  const figure = (finished: boolean): PlotlyFigure => {
    const fig = trainingChart(history, { title, height });
    const meta: LiveChartMeta = { live: displayId, steps: history.length, finished };
    return { ...fig, layout: { ...fig.layout, meta: { nbtune: meta } } };
  };

  const redraw = (finished: boolean): Promise<void> => {
    const bundle = plotlyBundle(figure(finished), { library: "none" });
    // Sends go one after another so the last update always lands last, even if onStep is not awaited.
    queue = queue.then(async () => {
      if (!shown) {
        await ensurePlotlySetup();
        await display(bundle, { id: displayId });
        shown = true;
      } else {
        await display(bundle, { id: displayId, update: true });
      }
    }).catch((error) => console.error("liveTrainingChart: display failed:", error));
    return queue;
  };

  const onStep = (record: StepRecord): Promise<void> => {
    history.push(record);
    const due = history.length === 1 || history.length % every === 0;
    if (!due) return queue;
    if (jupyter) return redraw(false);
    console.log(stepSummary(record));
    return queue;
  };

  const finish = (): Promise<void> => {
    if (jupyter) return redraw(true);
    const last = history.at(-1);
    if (last === undefined) {
      console.log("no steps recorded");
      return queue;
    }
    if (history.length % every !== 0) console.log(stepSummary(last));
    const evals = history.filter((r) => r.evalLoss !== undefined).map((r) => r.evalLoss!);
    const seconds = history.reduce((sum, r) => sum + r.seconds, 0);
    console.log(
      `done: ${history.length} steps in ${formatDuration(seconds)} | final loss ${last.loss.toFixed(4)}` +
        (evals.length > 0 ? ` | best eval ${Math.min(...evals).toFixed(4)}` : ""),
    );
    return queue;
  };

  return {
    onStep,
    finish,
    get history() {
      return history;
    },
    displayId,
  };
}

/**
 * Plotly figures for training histories (`StepRecord[]` from the trainer): loss with eval loss and
 * learning rate, memory over steps, and both stacked for the live chart.
 *
 * @module
 */

import type { StepRecord } from "../train/types.ts";
import { memoryPartLabel } from "../engine/memory_parts.ts";
import type { RichObject } from "./display.ts";
import { plotlyChart, type PlotlyFigure } from "./plotly.ts";
import { LEGEND_BELOW } from "./report_charts.ts";
import { defineOptions, type FieldsOf, number, string } from "../options/schema.ts";

/** Options for {@linkcode lossChart}, {@linkcode memoryChart} and {@linkcode trainingChart}. */
export interface ChartOptions {
  /** Figure title.
   * @default "Training loss" / "Memory" / "Training" */
  title?: string;
  /** Figure height in pixels.
   * @default 420 (560 for {@linkcode trainingChart}) */
  height?: number;
}

const MIB = 2 ** 20;
const COLORS = { loss: "#1f77b4", eval: "#d62728", lr: "#7f7f7f" };
const MEMORY_COLORS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#bcbd22",
];

/** The schema of a chart's options (lossChart, memoryChart, trainingChart), with its defaults. */
export function chartSchema(fn: string, title: string, height: number) {
  return defineOptions(
    fn,
    {
      title: string("Figure title.", { default: title }),
      height: number("Figure height in pixels.", { above: 0, default: height }),
    } satisfies FieldsOf<ChartOptions>,
  );
}

function resolveChartOptions(fn: string, options: ChartOptions, title: string, height: number) {
  return chartSchema(fn, title, height).parse(options);
}

interface Axes {
  x: string;
  y: string;
}

/** Loss, eval loss (only steps that ran an eval) and lr (on `lrAxis`). */
function lossTraces(history: StepRecord[], axes: Axes, lrAxis: string): Record<string, unknown>[] {
  const evals = history.filter((r) => r.evalLoss !== undefined);
  const traces: Record<string, unknown>[] = [{
    type: "scatter",
    mode: "lines",
    name: "loss",
    xaxis: axes.x,
    yaxis: axes.y,
    x: history.map((r) => r.step),
    y: history.map((r) => r.loss),
    line: { color: COLORS.loss, width: 2 },
  }];
  if (evals.length > 0) {
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name: "eval loss",
      xaxis: axes.x,
      yaxis: axes.y,
      x: evals.map((r) => r.step),
      y: evals.map((r) => r.evalLoss),
      line: { color: COLORS.eval, width: 2 },
    });
  }
  traces.push({
    type: "scatter",
    mode: "lines",
    name: "lr",
    xaxis: axes.x,
    yaxis: lrAxis,
    x: history.map((r) => r.step),
    y: history.map((r) => r.lr),
    line: { color: COLORS.lr, width: 1, dash: "dot" },
  });
  return traces;
}

/** Stacked areas of the breakdown (MiB) when any record has one, else tensor / heap / rss lines. */
function memoryTraces(history: StepRecord[], axes: Axes): Record<string, unknown>[] {
  const x = history.map((r) => r.step);
  // Parts that stay 0 over the run (e.g. workspace, which the trainer counts in activations) are left out.
  const owners = [
    ...new Set(
      history.flatMap((r) =>
        Object.entries(r.memory.breakdown ?? {}).filter(([, v]) => v > 0).map(([k]) => k)
      ),
    ),
  ];
  if (owners.length > 0) {
    return owners.map((owner, i) => ({
      type: "scatter",
      mode: "lines",
      name: memoryPartLabel(owner),
      xaxis: axes.x,
      yaxis: axes.y,
      stackgroup: "memory",
      x,
      y: history.map((r) => ((r.memory.breakdown as Record<string, number> | undefined)?.[owner] ?? 0) / MIB),
      line: { width: 0.5, color: MEMORY_COLORS[i % MEMORY_COLORS.length] },
    }));
  }
  const series: [string, (r: StepRecord) => number][] = [
    ["tensors", (r) => r.memory.tensorBytes],
    ["wasm heap", (r) => r.memory.heapBytes],
    ["rss", (r) => r.memory.rssBytes],
  ];
  return series.map(([name, get], i) => ({
    type: "scatter",
    mode: "lines",
    name,
    xaxis: axes.x,
    yaxis: axes.y,
    x,
    y: history.map((r) => get(r) / MIB),
    line: { color: MEMORY_COLORS[i] },
  }));
}

const MARGIN = { l: 60, r: 70, t: 50, b: 40 };

/**
 * Loss per step, eval loss where evals ran, and the learning rate on a right-hand axis.
 *
 * @example
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = lossChart(syntheticHistory(20, { evalEvery: 10 }));
 * const names = fig.data.map((t) => t.name).join(",");
 * if (names !== "loss,eval loss,lr") throw new Error(names);
 * if ((fig.data[1].x as number[]).join() !== "10,20") throw new Error("wrong eval steps");
 * ```
 */
export function lossChart(history: StepRecord[], options: ChartOptions = {}): PlotlyFigure {
  const { title, height } = resolveChartOptions("lossChart", options, "Training loss", 420);
  return {
    data: lossTraces(history, { x: "x", y: "y" }, "y2"),
    layout: {
      title: { text: title },
      height,
      ...LEGEND_BELOW,
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: "loss" } },
      yaxis2: {
        title: { text: "learning rate" },
        overlaying: "y",
        side: "right",
        showgrid: false,
        exponentformat: "e",
      },
    },
  };
}

/**
 * Memory per step in MiB: stacked areas of the breakdown when the trainer reports one, else lines for
 * live tensor bytes, the wasm heap and the process rss.
 *
 * @example
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = memoryChart(syntheticHistory(5));
 * if (!fig.data.every((t) => t.stackgroup === "memory")) throw new Error("expected stacked areas");
 * ```
 */
export function memoryChart(history: StepRecord[], options: ChartOptions = {}): PlotlyFigure {
  const { title, height } = resolveChartOptions("memoryChart", options, "Memory", 420);
  return {
    data: memoryTraces(history, { x: "x", y: "y" }),
    layout: {
      title: { text: title },
      height,
      ...LEGEND_BELOW,
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: "MiB" } },
    },
  };
}

/**
 * Loss, eval loss and lr on top, memory below, sharing the step axis (the live chart's figure).
 *
 * @example
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = trainingChart(syntheticHistory(3));
 * if (!fig.data.some((t) => t.yaxis === "y3")) throw new Error("no memory panel");
 * ```
 */
export function trainingChart(history: StepRecord[], options: ChartOptions = {}): PlotlyFigure {
  const { title, height } = resolveChartOptions("trainingChart", options, "Training", 560);
  return {
    data: [...lossTraces(history, { x: "x", y: "y" }, "y2"), ...memoryTraces(history, { x: "x2", y: "y3" })],
    layout: {
      title: { text: title },
      height,
      margin: MARGIN,
      legend: { orientation: "h", y: -0.12 },
      xaxis: { anchor: "y", domain: [0, 1], showticklabels: false },
      yaxis: { domain: [0.4, 1], title: { text: "loss" } },
      yaxis2: {
        anchor: "x",
        overlaying: "y",
        side: "right",
        showgrid: false,
        exponentformat: "e",
        title: { text: "lr" },
      },
      xaxis2: { anchor: "y3", domain: [0, 1], matches: "x", title: { text: "step" } },
      yaxis3: { domain: [0, 0.3], anchor: "x2", title: { text: "memory (MiB)" } },
    },
  };
}

/**
 * {@linkcode lossChart} as a displayable: make it a cell's last expression to draw it.
 *
 * @example
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * const text = Deno.inspect(plotLoss(syntheticHistory(4)));
 * if (!text.startsWith('Plotly figure "Training loss": loss (4 points)')) throw new Error(text);
 * ```
 */
export function plotLoss(history: StepRecord[], options: ChartOptions = {}): RichObject {
  return plotlyChart(lossChart(history, options));
}

/**
 * {@linkcode memoryChart} as a displayable.
 *
 * @example
 * ```ts
 * import { syntheticHistory } from "./synthetic.ts";
 * if (!Deno.inspect(plotMemory(syntheticHistory(2))).includes('"Memory"')) throw new Error("wrong title");
 * ```
 */
export function plotMemory(history: StepRecord[], options: ChartOptions = {}): RichObject {
  return plotlyChart(memoryChart(history, options));
}

/**
 * Charts for reports (`out/demo/report.html`, notebook summaries) that a reader can take in at a glance:
 * the loss on a log axis with a smoothed line over the raw one, and memory in two views — the parts a
 * method changes (weights, adapters, gradients, optimizer state, quantization constants, host memory) and
 * the step's whole total with its activations. Every axis names its metric and unit; legends sit below the
 * plot area (never over an axis), with room reserved for them.
 * @module
 */
import type { StepRecord } from "../train/types.ts";
import { DEVICE_PARTS, type MemoryBreakdown, memoryPartLabel } from "../engine/memory_parts.ts";
import type { PlotlyFigure } from "./plotly.ts";

const MIB = 2 ** 20;

/** A horizontal legend under the x-axis title, and the bottom margin that makes room for it. */
export const LEGEND_BELOW = {
  legend: { orientation: "h", x: 0, xanchor: "left", y: -0.28, yanchor: "top" },
  margin: { l: 80, r: 80, t: 60, b: 130 },
} as const;

/**
 * Exponential moving average with bias correction (as TensorBoard smooths): the first points are not
 * pulled toward 0. `weight` in [0, 1): 0 returns the input.
 *
 * @example
 * ```ts
 * import { smooth } from "./report_charts.ts";
 * const s = smooth([4, 2, 2, 2], 0.5);
 * if (s[0] !== 4 || !(s[3] > 2 && s[3] < 2.5)) throw new Error(String(s));
 * if (smooth([1, 3], 0).join() !== "1,3") throw new Error("weight 0 keeps the input");
 * ```
 */
export function smooth(values: readonly number[], weight: number): number[] {
  if (!(weight >= 0 && weight < 1)) throw new RangeError(`smooth: weight must be in [0, 1); got ${weight}`);
  let avg = 0;
  return values.map((v, i) => {
    avg = weight * avg + (1 - weight) * v;
    return avg / (1 - weight ** (i + 1));
  });
}

/**
 * The loss of a run on a log axis: the raw step loss thin and light, a smoothed line over it, and the
 * evaluation loss as markers when the run evaluated.
 *
 * @example
 * ```ts
 * import { reportLossChart } from "./report_charts.ts";
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = reportLossChart(syntheticHistory(40, { evalEvery: 10 }), { title: "QLoRA" });
 * const layout = fig.layout as { yaxis: { type: string } };
 * if (layout.yaxis.type !== "log" || fig.data.length !== 3) throw new Error("log axis, three traces");
 * ```
 */
export function reportLossChart(
  history: readonly StepRecord[],
  options: { title?: string } = {},
): PlotlyFigure {
  if (history.length === 0) {
    throw new TypeError("reportLossChart: the history is empty (pass train()'s result)");
  }
  const steps = history.map((r) => r.step);
  const loss = history.map((r) => r.loss);
  // Light smoothing: a heavier EMA lags behind a fast early drop and draws a curve above every raw point.
  const weight = Math.min(0.8, Math.max(0, 1 - 10 / history.length));
  const evals = history.filter((r) => r.evalLoss !== undefined);
  const data: Record<string, unknown>[] = [
    {
      type: "scatter",
      mode: "lines",
      name: "training loss (each step)",
      x: steps,
      y: loss,
      line: { color: "rgba(31,119,180,0.3)", width: 1 },
    },
    {
      type: "scatter",
      mode: "lines",
      name: `training loss (smoothed, EMA ${weight.toFixed(2)})`,
      x: steps,
      y: smooth(loss, weight),
      line: { color: "#1f77b4", width: 2.5 },
    },
  ];
  if (evals.length > 0) {
    data.push({
      type: "scatter",
      mode: "lines+markers",
      name: "held-out loss",
      x: evals.map((r) => r.step),
      y: evals.map((r) => r.evalLoss),
      line: { color: "#d62728", width: 2 },
    });
  }
  return {
    data,
    layout: {
      title: { text: options.title ?? "Training loss" },
      height: 460,
      ...LEGEND_BELOW,
      xaxis: { title: { text: "optimizer step" } },
      // "D2": labels at 1, 2 and 5 of each decade only (every digit crowds the small decades).
      yaxis: { title: { text: "loss, nats per target token (log scale)" }, type: "log", dtick: "D2" },
    },
  };
}

/** The parts a fine-tuning method changes, in chart order (activations and workspace are the total's). */
export const METHOD_PARTS: readonly (keyof MemoryBreakdown)[] = [
  "weights",
  "quantConstants",
  "hostOffloaded",
  "adapters",
  "gradients",
  "optimizerStates",
];

const PART_COLORS: Record<keyof MemoryBreakdown, string> = {
  weights: "#1f77b4",
  quantConstants: "#17becf",
  hostOffloaded: "#7f7f7f",
  adapters: "#ff7f0e",
  gradients: "#2ca02c",
  optimizerStates: "#9467bd",
  activations: "#8c564b",
  workspace: "#e377c2",
};

function peakRecord(
  history: readonly StepRecord[],
  fn: string,
): StepRecord & { memory: { breakdown: MemoryBreakdown } } {
  const measured = history.filter((r) => r.memory?.breakdown);
  if (measured.length === 0) {
    throw new TypeError(`${fn}: no step has a memory breakdown (train with measureMemory: true)`);
  }
  const total = (r: StepRecord) => r.memory.peakTensorBytes ?? r.memory.tensorBytes;
  return measured.reduce((a, b) => (total(b) > total(a) ? b : a)) as StepRecord & {
    memory: { breakdown: MemoryBreakdown };
  };
}

/**
 * Memory view 1: the parts a method changes, at the step with the highest peak, one labelled bar each
 * (MiB). Host memory (4-bit codes and their constants, 8-bit optimizer state kept off the tensor heap) is
 * its own bar.
 *
 * @example
 * ```ts
 * import { memoryPartsChart } from "./report_charts.ts";
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = memoryPartsChart(syntheticHistory(5));
 * const bar = fig.data[0] as { y: string[] };
 * if (!bar.y.includes("Optimizer states") || bar.y.includes("Activations")) throw new Error(bar.y.join());
 * ```
 */
export function memoryPartsChart(
  history: readonly StepRecord[],
  options: { title?: string } = {},
): PlotlyFigure {
  const b = peakRecord(history, "memoryPartsChart").memory.breakdown;
  const always = ["weights", "adapters", "gradients", "optimizerStates"];
  const parts = METHOD_PARTS.filter((p) => always.includes(p) || b[p] > 0);
  const mib = parts.map((p) => b[p] / MIB);
  return {
    data: [{
      type: "bar",
      orientation: "h",
      name: "memory",
      y: parts.map(memoryPartLabel),
      x: mib,
      text: mib.map((v) => `${v.toFixed(v < 10 ? 2 : 1)} MiB`),
      textposition: "outside",
      cliponaxis: false,
      marker: { color: parts.map((p) => PART_COLORS[p]) },
      showlegend: false,
    }],
    layout: {
      title: { text: options.title ?? "What the method changes (peak step)" },
      height: 380,
      margin: { l: 170, r: 90, t: 60, b: 70 },
      xaxis: { title: { text: "memory, MiB" }, rangemode: "tozero" },
      yaxis: { autorange: "reversed", automargin: true },
      showlegend: false,
    },
  };
}

/**
 * Memory view 2: the whole step at its peak, the parts stacked in one bar with the activations (and
 * workspace) that usually dominate a small model's step, in MiB; host memory is shown as its own bar
 * beside the device total.
 *
 * @example
 * ```ts
 * import { memoryTotalChart } from "./report_charts.ts";
 * import { syntheticHistory } from "./synthetic.ts";
 * const fig = memoryTotalChart(syntheticHistory(5));
 * if (!fig.data.some((t) => (t as { name: string }).name === "Activations")) throw new Error("activations");
 * ```
 */
export function memoryTotalChart(
  history: readonly StepRecord[],
  options: { title?: string } = {},
): PlotlyFigure {
  const b = peakRecord(history, "memoryTotalChart").memory.breakdown;
  const device = DEVICE_PARTS.filter((p) => b[p] > 0);
  const rows = ["tensor memory (device)", "host memory"];
  const data: Record<string, unknown>[] = device.map((p) => ({
    type: "bar",
    orientation: "h",
    name: memoryPartLabel(p),
    y: [rows[0]],
    x: [b[p] / MIB],
    marker: { color: PART_COLORS[p] },
    hovertemplate: `${memoryPartLabel(p)}: %{x:.2f} MiB<extra></extra>`,
  }));
  if (b.hostOffloaded > 0) {
    data.push({
      type: "bar",
      orientation: "h",
      name: memoryPartLabel("hostOffloaded"),
      y: [rows[1]],
      x: [b.hostOffloaded / MIB],
      marker: { color: PART_COLORS.hostOffloaded },
    });
  }
  return {
    data,
    layout: {
      title: { text: options.title ?? "The whole step at its peak, activations included" },
      barmode: "stack",
      height: 380,
      legend: { ...LEGEND_BELOW.legend, y: -0.55, traceorder: "normal" },
      margin: { ...LEGEND_BELOW.margin, l: 170, b: 150 },
      xaxis: { title: { text: "memory, MiB" }, rangemode: "tozero" },
      yaxis: { automargin: true },
    },
  };
}

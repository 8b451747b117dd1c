/**
 * The figure of a DyLoRA rank sweep (`rankSweep` in `lib/adapters/rank_sweep.ts`): eval loss
 * against rank, and the task score on a second axis when the sweep had a scorer.
 * @module
 */
import type { RankSweepRow } from "../adapters/rank_sweep.ts";
import type { PlotlyFigure } from "./plotly.ts";
import { defineOptions, type FieldsOf, number, string } from "../options/schema.ts";
import { LEGEND_BELOW } from "./report_charts.ts";

/** Options for {@linkcode rankSweepChart}. */
export interface RankSweepChartOptions {
  /** Figure title. @default "Rank sweep (one DyLoRA run)" */
  title?: string;
  /** What the score is, with its unit, for the right axis and the legend (e.g. "exact match, %").
   * @default "score" */
  scoreLabel?: string;
  /** Multiply scores by this before plotting (100 turns a fraction into %). @default 1 */
  scoreScale?: number;
}

/** The schema of {@linkcode rankSweepChart}'s options. */
export const rankSweepChartSchema = defineOptions(
  "rankSweepChart",
  {
    title: string("Figure title.", { default: "Rank sweep (one DyLoRA run)" }),
    scoreLabel: string('What the score is, with its unit (e.g. "exact match, %").', { default: "score" }),
    scoreScale: number("Multiply scores by this before plotting (100 turns a fraction into %).", {
      above: 0,
      default: 1,
    }),
  } satisfies FieldsOf<RankSweepChartOptions>,
);

/**
 * Plotly figure of a rank sweep: eval loss by rank, plus the score (right axis) when the rows have one.
 *
 * @example
 * ```ts
 * import { rankSweepChart } from "./rank_sweep_chart.ts";
 * const fig = rankSweepChart({ rows: [{ rank: 1, loss: 2.5, score: 0.4 }, { rank: 2, loss: 2.1, score: 0.6 }] });
 * if (fig.data.length !== 2 || (fig.data[1] as { yaxis?: string }).yaxis !== "y2") throw new Error("two traces");
 * if (rankSweepChart({ rows: [{ rank: 1, loss: 2.5 }] }).data.length !== 1) throw new Error("no score trace");
 * ```
 */
export function rankSweepChart(
  sweep: { rows: readonly RankSweepRow[] },
  options: RankSweepChartOptions = {},
): PlotlyFigure {
  const { title, scoreLabel, scoreScale } = rankSweepChartSchema.parse(options);
  const rows = sweep.rows;
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new TypeError("rankSweepChart: the sweep has no rows (pass the result of rankSweep)");
  }
  const scored = rows.some((r) => r.score !== undefined);
  const trace = (y: (number | undefined)[], name: string) => ({
    x: rows.map((r) => r.rank),
    y,
    name,
    type: "scatter",
    mode: "lines+markers",
  });
  const data: Record<string, unknown>[] = [trace(rows.map((r) => r.loss), "held-out loss (left axis)")];
  if (scored) {
    const scores = rows.map((r) => (r.score === undefined ? undefined : r.score * scoreScale));
    data.push({ ...trace(scores, `${scoreLabel} (right axis)`), yaxis: "y2" });
  }
  return {
    data,
    layout: {
      title: { text: title },
      height: 440,
      ...LEGEND_BELOW,
      xaxis: { title: { text: "LoRA rank served" }, dtick: 1 },
      yaxis: { title: { text: "held-out loss, nats per token" }, rangemode: "tozero" },
      // From zero: a score that moves between 24 and 26 should not look like a cliff.
      ...(scored
        ? { yaxis2: { title: { text: scoreLabel }, overlaying: "y", side: "right", rangemode: "tozero" } }
        : {}),
    },
  };
}

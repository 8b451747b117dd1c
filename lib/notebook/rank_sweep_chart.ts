/**
 * The figure of a DyLoRA rank sweep (`rankSweep` in `lib/adapters/rank_sweep.ts`): eval loss
 * against rank, and the task score on a second axis when the sweep had a scorer.
 * @module
 */
import type { RankSweepRow } from "../adapters/rank_sweep.ts";
import type { PlotlyFigure } from "./plotly.ts";
import { defineOptions, type FieldsOf, string } from "../options/schema.ts";

/** Options for {@linkcode rankSweepChart}. */
export interface RankSweepChartOptions {
  /** Figure title. @default "Rank sweep (one DyLoRA run)" */
  title?: string;
}

/** The schema of {@linkcode rankSweepChart}'s options. */
export const rankSweepChartSchema = defineOptions(
  "rankSweepChart",
  {
    title: string("Figure title.", { default: "Rank sweep (one DyLoRA run)" }),
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
  const { title } = rankSweepChartSchema.parse(options);
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
  const data: Record<string, unknown>[] = [trace(rows.map((r) => r.loss), "eval loss")];
  if (scored) data.push({ ...trace(rows.map((r) => r.score), "score"), yaxis: "y2" });
  return {
    data,
    layout: {
      title: { text: title },
      xaxis: { title: { text: "rank" }, dtick: 1 },
      yaxis: { title: { text: "eval loss" } },
      ...(scored ? { yaxis2: { title: { text: "score" }, overlaying: "y", side: "right" } } : {}),
    },
  };
}

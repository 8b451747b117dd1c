/**
 * Memory plans for display: table rows in GB, a plain-text table, and a plotly figure
 * spec (stacked bars per plan). Plain data only; the notebook layer renders it.
 * @module
 */

import { parseBytes } from "./bytes.ts";
import { planLabel } from "./fit_plan.ts";
import type { MemoryPlan } from "./plan_memory.ts";
import { defineOptions, either, type FieldsOf, number, string } from "../options/schema.ts";
import { DEVICE_PARTS, MEMORY_PART_LABELS } from "../engine/memory_parts.ts";

/** Device parts, in the order tables and stacked bars show them (defined with the breakdown type). */
export { DEVICE_PARTS };

/** One table row; sizes in decimal GB (1e9 bytes). */
export interface PlanRow {
  /** Recipe label (`"NF4 + LoRA r=8"`). */
  label: string;
  method: string;
  weights: number;
  quantConstants: number;
  adapters: number;
  gradients: number;
  optimizerStates: number;
  activations: number;
  workspace: number;
  /** Device total. */
  total: number;
  /** Paged state in host memory. */
  hostOffloaded: number;
  /** Whether `total` is within the budget; undefined without a budget. */
  fits?: boolean;
}

/** Options of {@linkcode planTable} and {@linkcode planChartSpec}. */
export interface PlanTableOptions {
  /** Device budget (bytes or `"24GB"`); adds `fits` to rows and a line to charts. @default undefined */
  budget?: number | string;
}

/** The schema of {@linkcode PlanTableOptions} (`planTable`, `planChartSpec`). */
export const planTableSchema = defineOptions(
  "planTable",
  {
    budget: either(
      'Device budget (bytes or a size such as "24GB"); adds fits to rows and a line to charts.',
      [
        number("Bytes.", { above: 0 }),
        string("A size with a unit.", { nonEmpty: true }),
      ],
    ),
  } satisfies FieldsOf<PlanTableOptions>,
);

/**
 * Turns plans into display rows (GB).
 *
 * @param plans plans from `planMemory`
 * @param options optional budget
 * @returns one row per plan
 * @example
 * ```ts
 * import { planTable } from "./plan_table.ts";
 * import { planMemory } from "./plan_memory.ts";
 * const rows = planTable([planMemory({ params: 10e9, method: "full", accounting: "qlora-seed" })], { budget: "80GB" });
 * if (rows[0].total !== 160 || rows[0].fits !== false) throw new Error(JSON.stringify(rows[0]));
 * ```
 */
export function planTable(plans: MemoryPlan[], options?: PlanTableOptions): PlanRow[] {
  const o = planTableSchema.parse(options);
  const budget = o.budget === undefined ? undefined : parseBytes(o.budget);
  return plans.map((p) => {
    const row: PlanRow = {
      label: planLabel(p),
      method: p.method,
      weights: 0,
      quantConstants: 0,
      adapters: 0,
      gradients: 0,
      optimizerStates: 0,
      activations: 0,
      workspace: 0,
      total: p.total / 1e9,
      hostOffloaded: p.breakdown.hostOffloaded / 1e9,
    };
    for (const k of DEVICE_PARTS) row[k] = p.breakdown[k] / 1e9;
    if (budget !== undefined) row.fits = p.total <= budget;
    return row;
  });
}

/**
 * Renders rows as a fixed-width text table (GB with 2 decimals).
 *
 * @param rows from {@linkcode planTable}
 * @returns the table, one line per row after a header
 * @example
 * ```ts
 * import { formatPlanTable, planTable } from "./plan_table.ts";
 * import { planMemory } from "./plan_memory.ts";
 * const text = formatPlanTable(planTable([planMemory({ params: 10e9, method: "qlora", accounting: "qlora-seed" })]));
 * if (!text.split("\n")[0].startsWith("plan") || !text.includes("11.60")) throw new Error(text);
 * ```
 */
export function formatPlanTable(rows: PlanRow[]): string {
  const withFit = rows.some((r) => r.fits !== undefined);
  const head = ["plan", ...DEVICE_PARTS, "total", "host", ...(withFit ? ["fits"] : [])];
  const body = rows.map((r) => [
    r.label,
    ...DEVICE_PARTS.map((k) => r[k].toFixed(2)),
    r.total.toFixed(2),
    r.hostOffloaded.toFixed(2),
    ...(withFit ? [r.fits === undefined ? "" : r.fits ? "yes" : "no"] : []),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  return [line(head), ...body.map(line)].join("\n");
}

/** A plotly figure as JSON: traces and layout. */
export interface PlotlyFigureSpec {
  data: Record<string, unknown>[];
  layout: Record<string, unknown>;
}

/**
 * A plotly stacked-bar figure: one bar per plan, one trace per device part (GB), and a
 * dashed budget line when a budget is given. No plotly import: pass it to `Plotly.newPlot`.
 *
 * @param plans plans from `planMemory`
 * @param options optional budget
 * @returns `{ data, layout }`
 * @example
 * ```ts
 * import { planChartSpec } from "./plan_table.ts";
 * import { planMemory } from "./plan_memory.ts";
 * const fig = planChartSpec([planMemory({ config: "7B", method: "qlora" })], { budget: "24GB" });
 * if (fig.layout.barmode !== "stack" || fig.data.length !== 7) throw new Error("spec");
 * ```
 */
export function planChartSpec(plans: MemoryPlan[], options?: PlanTableOptions): PlotlyFigureSpec {
  const rows = planTable(plans, options);
  const x = rows.map((r) => r.label);
  const data = DEVICE_PARTS.map((k) => ({
    type: "bar",
    name: MEMORY_PART_LABELS[k],
    x,
    y: rows.map((r) => r[k]),
  }));
  const layout: Record<string, unknown> = {
    barmode: "stack",
    title: { text: "Peak device memory by part" },
    yaxis: { title: { text: "GB (1e9 bytes)" } },
  };
  if (options?.budget !== undefined) {
    const b = parseBytes(options.budget) / 1e9;
    layout.shapes = [{
      type: "line",
      xref: "paper",
      x0: 0,
      x1: 1,
      y0: b,
      y1: b,
      line: { dash: "dash", color: "red" },
    }];
    layout.annotations = [{
      xref: "paper",
      x: 1,
      y: b,
      text: `budget ${b} GB`,
      showarrow: false,
      yanchor: "bottom",
    }];
  }
  return { data, layout };
}

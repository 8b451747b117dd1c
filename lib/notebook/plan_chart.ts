/**
 * Memory plans in a notebook: several plans (methods, batch shapes) side by side as a
 * stacked bar per plan, and as a table. Built on `planChartSpec`/`planTable`
 * (`lib/plan/plan_table.ts`), `plotlyChart` and `table`; nothing here needs a kernel.
 *
 * @module
 */

import { LEGEND_BELOW } from "./report_charts.ts";
import { planLabel } from "../plan/fit_plan.ts";
import type { MemoryPlan } from "../plan/plan_memory.ts";
import { DEVICE_PARTS, planChartSpec, planTable } from "../plan/plan_table.ts";
import type { RichObject } from "./display.ts";
import { plotlyChart } from "./plotly.ts";
import { table } from "./tables.ts";
import { array, defineOptions, either, type FieldsOf, number, oneOf, string } from "../options/schema.ts";

/** Units of plan charts and tables (decimal, like the planner's GB). */
export type PlanUnit = "auto" | "GB" | "MB";

/** Options for {@linkcode plotPlans}. */
export interface PlotPlansOptions {
  /** Figure title.
   * @default "Peak memory by part" */
  title?: string;
  /** One label per plan (the x axis).
   * @default each plan's recipe label (`"NF4 + LoRA r=8"`), numbered when two are equal */
  labels?: string[];
  /** Device budget (bytes or `"24GB"`): a dashed line.
   * @default none */
  budget?: number | string;
  /** `"GB"` (1e9 B), `"MB"` (1e6 B), or `"auto"`: MB when every plan is under 1 GB.
   * @default "auto" */
  unit?: PlanUnit;
  /** Figure height in pixels.
   * @default 480 */
  height?: number;
}

/** Options for {@linkcode showPlanTable}. */
export interface PlanTableDisplayOptions {
  /** Caption.
   * @default "Peak memory by part (<unit>)" */
  title?: string;
  /** One label per plan.
   * @default as {@linkcode plotPlans} */
  labels?: string[];
  /** Device budget: adds a `fits` column.
   * @default none */
  budget?: number | string;
  /** As {@linkcode plotPlans}.
   * @default "auto" */
  unit?: PlanUnit;
}

const planDisplayFields = {
  title: string("Figure title or caption."),
  labels: array("One label per plan (default: each plan's recipe label).", string("A label.")),
  budget: either('Device budget (bytes or a size such as "24GB").', [
    number("Bytes.", { above: 0 }),
    string("A size with a unit.", { nonEmpty: true }),
  ]),
  unit: oneOf(
    '"GB" (1e9 B), "MB" (1e6 B), or "auto": MB when every plan is under 1 GB.',
    ["auto", "GB", "MB"] as const,
    {
      default: "auto",
    },
  ),
};

/** The schema of {@linkcode plotPlans}'s options. */
export const plotPlansSchema = defineOptions(
  "plotPlans",
  {
    ...planDisplayFields,
    title: string("Figure title.", { default: "Peak memory by part" }),
    height: number("Figure height in pixels.", { above: 0, default: 480 }),
  } satisfies FieldsOf<PlotPlansOptions>,
);

/** The schema of {@linkcode showPlanTable}'s options. */
export const showPlanTableSchema = defineOptions(
  "showPlanTable",
  planDisplayFields satisfies FieldsOf<
    PlanTableDisplayOptions
  >,
);

function checkPlans(fn: string, plans: MemoryPlan[]): void {
  if (!Array.isArray(plans) || plans.length === 0) {
    throw new TypeError(`${fn}() needs a non-empty array of plans (planMemory / planForModel results)`);
  }
}

/** Labels for the x axis / first column: given ones, or recipe labels numbered when repeated. */
function labelsFor(fn: string, plans: MemoryPlan[], labels?: string[]): string[] {
  if (labels !== undefined) {
    if (!Array.isArray(labels) || labels.length !== plans.length) {
      throw new RangeError(
        `${fn}() labels must have one entry per plan (${plans.length}); got ${labels?.length}`,
      );
    }
    return labels.map(String);
  }
  const base = plans.map(planLabel);
  const seen = new Map<string, number>();
  return base.map((l) => {
    const n = (seen.get(l) ?? 0) + 1;
    seen.set(l, n);
    return base.filter((b) => b === l).length > 1 ? `${l} #${n}` : l;
  });
}

/** The unit to show and its factor from planTable's GB. */
function unitFor(
  fn: string,
  plans: MemoryPlan[],
  unit: PlanUnit = "auto",
): { name: "GB" | "MB"; perGB: number } {
  if (!["auto", "GB", "MB"].includes(unit)) {
    throw new RangeError(`${fn}() unit must be "auto", "GB" or "MB"; got "${unit}"`);
  }
  const name = unit === "auto" ? (Math.max(...plans.map((p) => p.total)) < 1e9 ? "MB" : "GB") : unit;
  return { name, perGB: name === "MB" ? 1000 : 1 };
}

/**
 * Several plans side by side: one bar per plan, stacked by part (weights, quantization
 * constants, adapters, gradients, optimizer states, activations, workspace), one trace per part.
 *
 * @param plans plans to compare (`planMemory`, `planForModel`, `fitPlan(...)[i].plan`)
 * @param options title, labels, budget line, unit, height
 * @returns a displayable chart (renders when it is a cell's last expression)
 * @example
 * ```ts
 * import { plotPlans } from "./plan_chart.ts";
 * import { planMemory } from "../plan/plan_memory.ts";
 * const plans = ["full", "lora", "qlora"].map((m) => planMemory({ config: "7B", method: m as "full" }));
 * const chart = plotPlans(plans, { title: "7B", budget: "24GB" });
 * const fig = chart.bundle["application/vnd.plotly.v1+json"] as { data: { name: string; x: string[] }[] };
 * if (fig.data.length !== 7 || fig.data[0].x.length !== 3) throw new Error("one trace per part, one bar per plan");
 * ```
 */
export function plotPlans(plans: MemoryPlan[], options: PlotPlansOptions = {}): RichObject {
  const { height } = plotPlansSchema.parse(options);
  checkPlans("plotPlans", plans);
  const labels = labelsFor("plotPlans", plans, options.labels);
  const unit = unitFor("plotPlans", plans, options.unit);
  const spec = planChartSpec(plans, options.budget === undefined ? {} : { budget: options.budget });
  const data = spec.data.map((trace) => ({
    ...trace,
    x: labels,
    y: (trace.y as number[]).map((v) => v * unit.perGB),
    hovertemplate: `%{x}<br>${trace.name}: %{y:.2f} ${unit.name}<extra></extra>`,
  }));
  const layout: Record<string, unknown> = {
    ...spec.layout,
    title: { text: options.title ?? "Peak memory by part" },
    yaxis: { title: { text: unit.name === "MB" ? "MB (1e6 bytes)" : "GB (1e9 bytes)" } },
    height,
    // Below the plot (the parts are many; a legend at the right would be clipped in short figures).
    legend: { ...LEGEND_BELOW.legend, traceorder: "normal" },
    margin: LEGEND_BELOW.margin,
  };
  // Rescale the budget line and its note to the unit shown.
  if (Array.isArray(layout.shapes)) {
    layout.shapes = (layout.shapes as Record<string, unknown>[]).map((s) => ({
      ...s,
      y0: (s.y0 as number) * unit.perGB,
      y1: (s.y1 as number) * unit.perGB,
    }));
  }
  if (Array.isArray(layout.annotations)) {
    layout.annotations = (layout.annotations as Record<string, unknown>[]).map((a) => {
      const y = (a.y as number) * unit.perGB;
      return { ...a, y, text: `budget ${Number(y.toFixed(2))} ${unit.name}` };
    });
  }
  return plotlyChart({ data, layout });
}

/**
 * Several plans as a table: one row per plan, one column per part, the device total and
 * host-memory bytes (and whether it fits the budget), in GB or MB with two decimals.
 *
 * @param plans plans to compare
 * @param options title, labels, budget, unit
 * @returns a displayable table (HTML in a notebook, aligned text when printed)
 * @example
 * ```ts
 * import { showPlanTable } from "./plan_chart.ts";
 * import { planMemory } from "../plan/plan_memory.ts";
 * const t = showPlanTable([planMemory({ config: "7B", method: "qlora" })], { budget: "24GB" });
 * const text = Deno.inspect(t);
 * if (!text.includes("NF4 + LoRA r=8") || !text.includes("fits") || !text.includes("(GB)")) throw new Error(text);
 * ```
 */
export function showPlanTable(plans: MemoryPlan[], options: PlanTableDisplayOptions = {}): RichObject {
  showPlanTableSchema.parse(options);
  checkPlans("showPlanTable", plans);
  const labels = labelsFor("showPlanTable", plans, options.labels);
  const unit = unitFor("showPlanTable", plans, options.unit);
  const rows = planTable(plans, options.budget === undefined ? {} : { budget: options.budget });
  const cell = (gb: number) => (gb * unit.perGB).toFixed(2);
  const out = rows.map((r, i) => {
    const row: Record<string, unknown> = { plan: labels[i] };
    for (const k of DEVICE_PARTS) row[k] = cell(r[k]);
    row.total = cell(r.total);
    row.host = cell(r.hostOffloaded);
    if (r.fits !== undefined) row.fits = r.fits ? "yes" : "no";
    return row;
  });
  return table(out, { title: options.title ?? `Peak memory by part (${unit.name})` });
}

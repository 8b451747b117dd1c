/**
 * Tables as displayables (HTML in a notebook, an aligned text table elsewhere) and the memory table.
 *
 * @module
 */

import type { MemoryRecord, StepRecord } from "../train/types.ts";
import { memoryPartLabel } from "../engine/memory_parts.ts";
import { type RichObject, richObject } from "./display.ts";
import { escapeHtml } from "./_html.ts";
import { array, defineOptions, type FieldsOf, string } from "../options/schema.ts";

/** Options for {@linkcode table}. */
export interface TableOptions {
  /** Columns to show, in order.
   * @default the keys of all rows, in order of first appearance */
  columns?: string[];
  /** Caption above the table.
   * @default none */
  title?: string;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/**
 * Bytes in binary units with one decimal (`1536` → `"1.5 KiB"`); plain bytes below 1 KiB.
 *
 * @example
 * ```ts
 * if (formatBytes(512) !== "512 B") throw new Error("B");
 * if (formatBytes(1536) !== "1.5 KiB") throw new Error("KiB");
 * if (formatBytes(3 * 2 ** 30) !== "3.0 GiB") throw new Error("GiB");
 * if (formatBytes(-(2 ** 20)) !== "-1.0 MiB") throw new Error("negative");
 * ```
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const sign = bytes < 0 ? "-" : "";
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${sign}${value} B` : `${sign}${value.toFixed(1)} ${UNITS[unit]}`;
}

/**
 * How a table cell prints: integers as is, other numbers with 5 significant digits (exponent form for
 * very small or large values), `null`/`undefined` empty, objects as JSON.
 *
 * @example
 * ```ts
 * const cells = [formatCell(42), formatCell(2.345678), formatCell(1e-5), formatCell(undefined), formatCell("a")];
 * if (cells.join("|") !== "42|2.3457|1.00e-5||a") throw new Error(cells.join("|"));
 * ```
 */
export function formatCell(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value) || !Number.isFinite(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e7)
      ? value.toExponential(2)
      : String(Number(value.toPrecision(5)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The schema of {@linkcode table}'s options. */
export const tableSchema = defineOptions(
  "table",
  {
    columns: array("Columns to show, in order (default: the keys of all rows).", string("A column.")),
    title: string("Caption above the table."),
  } satisfies FieldsOf<TableOptions>,
);

function resolveTableOptions(rows: Record<string, unknown>[], options: TableOptions) {
  tableSchema.parse(options);
  if (!Array.isArray(rows)) throw new TypeError(`table() needs an array of row objects; got ${typeof rows}`);
  const columns = options.columns ?? [...new Set(rows.flatMap((row) => Object.keys(row)))];
  return { columns, title: options.title };
}

/** Numbers, or text such as "1.5 MiB" and "12.0%". */
const NUMERIC_TEXT = /^-?\d[\d.,]*(e[-+]?\d+)?\s?(B|KiB|MiB|GiB|TiB|PiB|%)?$/;

/** Numeric columns (every non-empty value a number or a formatted quantity) are right-aligned. */
function numericColumns(rows: Record<string, unknown>[], columns: string[]): boolean[] {
  return columns.map((c) => {
    const values = rows.map((r) => r[c]).filter((v) => v !== undefined && v !== null && v !== "");
    return values.length > 0 &&
      values.every((v) => typeof v === "number" || (typeof v === "string" && NUMERIC_TEXT.test(v)));
  });
}

/** The text/plain form: header, dashes, then rows; numbers right-aligned, text left-aligned. */
function textTable(rows: Record<string, unknown>[], columns: string[], title?: string): string {
  const numeric = numericColumns(rows, columns);
  const cells = rows.map((row) => columns.map((c) => formatCell(row[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const line = (values: string[]) =>
    values.map((v, i) => numeric[i] ? v.padStart(widths[i]) : v.padEnd(widths[i])).join("  ").trimEnd();
  const out = [line(columns), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)];
  return (title ? [title, ...out] : out).join("\n");
}

function htmlTable(rows: Record<string, unknown>[], columns: string[], title?: string): string {
  const numeric = numericColumns(rows, columns);
  const align = (i: number) => ` style="text-align:${numeric[i] ? "right" : "left"}"`;
  const head = columns.map((c, i) => `<th${align(i)}>${escapeHtml(c)}</th>`).join("");
  const body = rows.map((row) =>
    `<tr>${columns.map((c, i) => `<td${align(i)}>${escapeHtml(formatCell(row[c]))}</td>`).join("")}</tr>`
  ).join("\n");
  const caption = title
    ? `<caption style="text-align:left;font-weight:bold">${escapeHtml(title)}</caption>`
    : "";
  return `<table class="nbtune-table">${caption}<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
}

/**
 * Rows of objects as a table: HTML in a notebook, an aligned text table when printed.
 *
 * @example
 * ```ts
 * const t = table([{ name: "lora", params: 4096 }, { name: "dora", params: 4160 }]);
 * const expected = "name  params\n----  ------\nlora    4096\ndora    4160";
 * if (Deno.inspect(t) !== expected) throw new Error(Deno.inspect(t));
 * ```
 */
export function table(rowObjects: readonly object[], options: TableOptions = {}): RichObject {
  // Any object rows (interfaces such as SummaryRow included) are read as string-keyed records.
  const rows = rowObjects as Record<string, unknown>[];
  const { columns, title } = resolveTableOptions(rows, options);
  return richObject({
    "text/html": htmlTable(rows, columns, title),
    "text/plain": textTable(rows, columns, title),
  });
}

function isStepRecord(value: StepRecord | MemoryRecord): value is StepRecord {
  return typeof (value as StepRecord).memory === "object";
}

/**
 * The memory of a step (or a bare MemoryRecord): each owner of the breakdown with its share of the
 * tensor bytes, then live tensors, the wasm heap and the process rss.
 *
 * @example
 * ```ts
 * const t = showMemory({ tensorBytes: 3 * 2 ** 20, numTensors: 4, heapBytes: 2 ** 24, rssBytes: 2 ** 28,
 *   breakdown: { weights: 2 * 2 ** 20, adapters: 2 ** 20, quantConstants: 0, gradients: 0, optimizerStates: 0,
 *     activations: 0, workspace: 0, hostOffloaded: 0 } });
 * const text = Deno.inspect(t);
 * if (!text.includes("Weights") || !text.includes("66.7%") || !text.includes("256.0 MiB")) throw new Error(text);
 * ```
 */
export function showMemory(record: StepRecord | MemoryRecord): RichObject {
  const memory = isStepRecord(record) ? record.memory : record;
  const title = isStepRecord(record) ? `Memory after step ${record.step}` : "Memory";
  // Shares of the breakdown's total (the owners include host memory and the step's peak
  // activations, so the live tensor bytes at the end of the step are not the right denominator).
  const total = Object.values(memory.breakdown ?? {}).reduce((a, b) => a + b, 0);
  const share = (bytes: number) => total > 0 ? `${(100 * bytes / total).toFixed(1)}%` : "";
  const owners = Object.entries(memory.breakdown ?? {}).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  const rows: Record<string, unknown>[] = [
    ...owners.map(([owner, bytes]) => ({
      what: memoryPartLabel(owner),
      size: formatBytes(bytes),
      share: share(bytes),
    })),
    ...(memory.peakTensorBytes !== undefined
      ? [{ what: "peak tensors during the step", size: formatBytes(memory.peakTensorBytes), share: "" }]
      : []),
    { what: `tensors (${memory.numTensors} live)`, size: formatBytes(memory.tensorBytes), share: "" },
    { what: "wasm heap", size: formatBytes(memory.heapBytes), share: "" },
    { what: "process rss", size: formatBytes(memory.rssBytes), share: "" },
  ];
  return table(rows, { title });
}

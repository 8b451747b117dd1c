/**
 * Memory planner on the command line: prints a table of methods and the cheapest changes
 * that fit the budget.
 *
 * ```sh
 * deno run -A scripts/plan_cli.ts --model 7B --budget 24GB [--method qlora] [--seq 512 --batch 1]
 *   [--accum 1] [--rank 8] [--checkpointing] [--dtype bf16] [--galore-rank 1024] [--limit 5]
 * ```
 * @module
 */

import { fitPlan } from "../lib/plan/fit_plan.ts";
import { planMemory } from "../lib/plan/plan_memory.ts";
import type { FloatDtype, PlanMethod, PlanSpec } from "../lib/plan/plan_spec.ts";
import { PLAN_METHODS } from "../lib/plan/plan_spec.ts";
import { formatPlanTable, planTable } from "../lib/plan/plan_table.ts";
import { presetNames } from "../lib/plan/presets.ts";

const USAGE =
  `usage: plan_cli.ts --model <preset> --budget <size> [--method m] [--seq n] [--batch n] [--accum n]
  [--rank r] [--galore-rank r] [--checkpointing] [--dtype fp32|fp16|bf16] [--limit n]
presets: ${presetNames().join(", ")}
methods: ${PLAN_METHODS.join(", ")}`;

const VALUE_FLAGS = [
  "model",
  "budget",
  "method",
  "seq",
  "batch",
  "accum",
  "rank",
  "galore-rank",
  "dtype",
  "limit",
];

/** Reads `--flag value`, `--flag=value` and the boolean `--checkpointing` / `--help`. */
function parseFlags(
  args: string[],
): Record<string, string | undefined> & { checkpointing: boolean; help: boolean } {
  const out: Record<string, string | undefined> = {
    model: "7B",
    budget: "24GB",
    seq: "512",
    batch: "1",
    accum: "1",
    limit: "5",
  };
  let checkpointing = false, help = false;
  for (let i = 0; i < args.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(args[i]);
    if (!m) throw new RangeError(`unexpected argument "${args[i]}"\n${USAGE}`);
    const [, name, inline] = m;
    if (name === "checkpointing") checkpointing = true;
    else if (name === "help") help = true;
    else if (VALUE_FLAGS.includes(name)) {
      const v = inline ?? args[++i];
      if (v === undefined) throw new RangeError(`--${name} needs a value\n${USAGE}`);
      out[name] = v;
    } else throw new RangeError(`unknown flag --${name}\n${USAGE}`);
  }
  return Object.assign(out, { checkpointing, help });
}

/**
 * Runs the CLI on `args`; returns the text to print.
 *
 * @param args command-line arguments
 * @returns the report
 * @example
 * ```ts
 * import { runPlanCli } from "./plan_cli.ts";
 * const text = runPlanCli(["--model", "7B", "--budget", "24GB", "--method", "qlora"]);
 * if (!text.includes("Cheapest changes that fit:") || !text.includes("NF4 + LoRA r=8")) throw new Error(text);
 * ```
 */
export function runPlanCli(args: string[]): string {
  const a = parseFlags(args);
  if (a.help) return USAGE;
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const base: Omit<PlanSpec, "method"> = {
    config: a.model,
    seqLen: num(a.seq),
    microBatch: num(a.batch),
    gradAccumSteps: num(a.accum),
    loraRank: num(a.rank),
    galoreRank: num(a["galore-rank"]),
    gradientCheckpointing: a.checkpointing,
    weightDtype: a.dtype as FloatDtype | undefined,
  };
  const methods: PlanMethod[] = a.method ? [a.method as PlanMethod] : ["full", "galore8bit", "lora", "qlora"];
  const plans = methods.map((method) =>
    planMemory({ ...base, method, ...(method === "galore8bit" ? { layerwise: true } : {}) })
  );
  const lines = [
    `${plans[0].spec.modelLabel}: ${(plans[0].params / 1e9).toFixed(2)}B parameters, budget ${a.budget}` +
    ` (sizes in GB = 1e9 bytes)`,
    "",
    formatPlanTable(planTable(plans, { budget: a.budget })),
    "",
    "Assumptions:",
    ...new Set(plans.flatMap((p) => p.assumptions.map((s) => `  - ${s}`))),
    "",
    "Cheapest changes that fit:",
  ];
  const fits = fitPlan({ ...base, method: methods[0] }, a.budget ?? "24GB", { limit: num(a.limit) });
  if (fits.length === 0) {
    lines.push("  nothing fits; try a larger budget, a shorter --seq or a smaller model.");
  }
  fits.forEach((f, i) =>
    lines.push(`  ${i + 1}. ${f.sentence}${f.changes.length ? ` [${f.changes.join("; ")}]` : ""}`)
  );
  return lines.join("\n");
}

if (import.meta.main) {
  try {
    console.log(runPlanCli(Deno.args));
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    Deno.exit(2);
  }
}

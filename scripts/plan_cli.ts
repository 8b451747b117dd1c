/**
 * Memory planner on the command line: prints a table of methods and the cheapest changes
 * that fit the budget. Options: `deno task plan --help`.
 *
 * ```sh
 * deno task plan --model 7B --budget 24GB --method qlora --seq 512
 * ```
 * @module
 */

import { formatGB } from "../lib/plan/bytes.ts";
import { fitPlan } from "../lib/plan/fit_plan.ts";
import { planMemory } from "../lib/plan/plan_memory.ts";
import type { FloatDtype, PlanMethod, PlanSpec } from "../lib/plan/plan_spec.ts";
import { PLAN_METHODS } from "../lib/plan/plan_spec.ts";
import { formatPlanTable, planTable } from "../lib/plan/plan_table.ts";
import { getPreset, presetNames } from "../lib/plan/presets.ts";
import { CliUsageError, defineCli, formatHelp, parseCli, runCli } from "./_cli.ts";

const PLAN_CLI = defineCli({
  name: "plan",
  summary: "Memory plan of fine-tuning a model: a table of methods (full, GaLore, LoRA, QLoRA) with their " +
    "memory breakdown, then the cheapest changes that fit the budget.",
  usage: "deno task plan [options]",
  options: {
    model: {
      type: "string",
      default: "7B",
      placeholder: "NAME|DIR",
      description: `preset (${presetNames().join(", ")}) or an HF model folder with config.json`,
      example: "--model llama-3-8b",
    },
    budget: { type: "size", default: "24GB", description: "device memory to fit", example: "--budget 80GB" },
    method: {
      type: "string",
      choices: PLAN_METHODS,
      description: "plan only this method",
      defaultText: "compare full, galore8bit, lora and qlora",
      example: "--method qlora",
    },
    seq: {
      type: "integer",
      default: 512,
      min: 1,
      api: "seqLen",
      description: "sequence length",
      example: "--seq 1024",
    },
    batch: {
      type: "integer",
      default: 1,
      min: 1,
      api: "microBatch",
      description: "micro-batch size",
      example: "--batch 4",
    },
    accum: {
      type: "integer",
      default: 1,
      min: 1,
      api: "gradAccumSteps",
      description: "gradient accumulation steps",
      example: "--accum 8",
    },
    rank: {
      type: "integer",
      default: 8,
      min: 1,
      api: "r",
      description: "LoRA rank",
      example: "--rank 16",
    },
    "galore-rank": {
      type: "integer",
      default: 128,
      min: 1,
      api: "galore.r",
      description: "GaLore projection rank",
      example: "--galore-rank 1024",
    },
    checkpointing: {
      type: "boolean",
      api: "gradientCheckpointing",
      description: "gradient checkpointing (recompute activations)",
      example: "--checkpointing",
    },
    dtype: {
      type: "string",
      default: "bf16",
      choices: ["fp32", "fp16", "bf16"],
      api: "weightDtype",
      description: "weight dtype",
      example: "--dtype fp32",
    },
    limit: {
      type: "integer",
      default: 5,
      min: 1,
      description: "how many fitting changes to list",
      example: "--limit 3",
    },
  },
  examples: [
    "deno task plan --model 7B --budget 24GB",
    "deno task plan --model 70B --budget 48GiB --method qlora --seq 1024 --checkpointing",
  ],
});

/** A preset name, else the config.json of an HF model folder (or the file itself). */
function modelConfig(name: string): string | Record<string, unknown> {
  try {
    getPreset(name);
    return name;
  } catch (e) {
    const file = name.endsWith(".json") ? name : `${name.replace(/\/+$/, "")}/config.json`;
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      throw new CliUsageError(`--model: ${(e as Error).message} (or an HF model folder with config.json)`);
    }
    return JSON.parse(text);
  }
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
  const { values: a, help } = parseCli(PLAN_CLI, args);
  if (help) return formatHelp(PLAN_CLI);
  const base: Omit<PlanSpec, "method"> = {
    config: modelConfig(a.model),
    seqLen: a.seq,
    microBatch: a.batch,
    gradAccumSteps: a.accum,
    r: a.rank,
    galore: { r: a["galore-rank"] },
    gradientCheckpointing: a.checkpointing,
    weightDtype: a.dtype as FloatDtype,
  };
  const methods: PlanMethod[] = a.method ? [a.method as PlanMethod] : ["full", "galore8bit", "lora", "qlora"];
  const plans = methods.map((method) =>
    planMemory({ ...base, method, ...(method === "galore8bit" ? { layerwise: true } : {}) })
  );
  const lines = [
    `${plans[0].spec.modelLabel}: ${
      plans[0].params >= 1e9
        ? `${(plans[0].params / 1e9).toFixed(2)}B`
        : `${(plans[0].params / 1e6).toFixed(2)}M`
    } parameters, budget ${formatGB(a.budget)}` +
    ` (sizes in GB = 1e9 bytes)`,
    "",
    formatPlanTable(planTable(plans, { budget: a.budget })),
    "",
    "Assumptions:",
    ...new Set(plans.flatMap((p) => p.assumptions.map((s) => `  - ${s}`))),
    "",
    "Cheapest changes that fit:",
  ];
  const fits = fitPlan({ ...base, method: methods[0] }, a.budget, { limit: a.limit });
  if (fits.length === 0) {
    lines.push("  nothing fits; try a larger budget, a shorter --seq or a smaller model.");
  }
  fits.forEach((f, i) =>
    lines.push(`  ${i + 1}. ${f.sentence}${f.changes.length ? ` [${f.changes.join("; ")}]` : ""}`)
  );
  return lines.join("\n");
}

if (import.meta.main) await runCli(PLAN_CLI, () => console.log(runPlanCli(Deno.args)));

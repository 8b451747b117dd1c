/**
 * Suggests the cheapest changes that make a fine-tuning plan fit a memory budget.
 *
 * The search covers method (full, GaLore 8-bit layer-wise, LoRA, QLoRA; DyLoRA and
 * QDyLoRA when asked about those), gradient checkpointing, micro-batch (accumulation
 * grows so the effective batch stays), Adam state precision (fp32, 8-bit, paged 8-bit)
 * and LoRA rank (halved down to 4). Fitting candidates are ranked by, in order:
 * 1. **quality loss** against the requested setting, in steps: method on the scale full 0,
 *    galore 2, galore8bit 3, lora/dylora 4, qlora/qdylora 5 (GaLore tracks full fine-tuning
 *    more closely than LoRA per the GaLore seed; 4-bit adds quantization error); +1 for
 *    8-bit Adam states on non-GaLore methods; +1 per halving of the LoRA rank;
 * 2. number of changes from the request;
 * 3. **slowdown**, a rough relative time: checkpointing ×4/3 (one extra forward), GaLore
 *    ×2.2 (the GaLore seed's 130 vs 58 minutes), 4-bit ×1.3 (dequantize on every use),
 *    paged ×1.1, and ×(1 + 0.1·log2(requested / micro-batch)) for smaller micro-batches;
 * 4. device bytes, then the sentence (so the order is fully deterministic).
 * @module
 */

import { formatGB, parseBytes } from "./bytes.ts";
import { array, defineOptions, type FieldsOf, integer, oneOf } from "../options/schema.ts";
import type { MemoryPlan } from "./plan_memory.ts";
import { planMemory } from "./plan_memory.ts";
import type { OptimizerStatePrecision, PlanMethod, PlanSpec, ResolvedPlanSpec } from "./plan_spec.ts";
import { PLAN_METHODS, resolvePlanSpec } from "./plan_spec.ts";
import { optimizerKind } from "../optim/registry.ts";

/** Options of {@linkcode fitPlan}. */
export interface FitPlanOptions {
  /** Most suggestions returned. @default 5 */
  limit?: number;
  /** Methods to try. @default full, galore8bit, lora and qlora plus the requested one; dylora and qdylora for DyLoRA requests */
  methods?: PlanMethod[];
}

/** The schema of {@linkcode fitPlan}'s options. */
export const fitPlanSchema = defineOptions(
  "fitPlan",
  {
    limit: integer("Most suggestions returned.", { min: 1, default: 5 }),
    methods: array(
      "Methods to try (default: full, galore8bit, lora, qlora plus the requested one; dylora, qdylora for DyLoRA).",
      oneOf("A method.", PLAN_METHODS),
      { minLength: 1 },
    ),
  } satisfies FieldsOf<FitPlanOptions>,
);

/** One way to fit the budget. */
export interface FitSuggestion {
  plan: MemoryPlan;
  /** What differs from the request, one phrase each. */
  changes: string[];
  /** A sentence for people: recipe, model, budget, batch, total. */
  sentence: string;
  /** Quality steps lost against the request (see the module doc). */
  qualityLoss: number;
  /** Rough time factor against the request. */
  slowdown: number;
}

const QUALITY: Record<PlanMethod, number> = {
  full: 0,
  galore: 2,
  galore8bit: 3,
  lora: 4,
  dylora: 4,
  qlora: 5,
  qdylora: 5,
};

const isAdapter = (m: PlanMethod) => m === "lora" || m === "qlora" || m === "dylora" || m === "qdylora";
const is8bit = (m: PlanMethod, st: OptimizerStatePrecision) =>
  m === "galore8bit" || st === "8bit" || st === "paged8bit";

function quality(s: ResolvedPlanSpec, requestedRank: number): number {
  let q = QUALITY[s.method];
  if (s.method !== "galore8bit" && s.method !== "galore" && is8bit(s.method, s.optimizerState)) {
    q += 1;
  }
  if (isAdapter(s.method)) q += Math.max(0, Math.log2(requestedRank / s.r));
  return q;
}

function speed(
  s: Pick<ResolvedPlanSpec, "method" | "gradientCheckpointing" | "optimizerState" | "microBatch">,
): number {
  let f = s.gradientCheckpointing ? 4 / 3 : 1;
  switch (s.method) {
    case "galore":
    case "galore8bit":
      f *= 2.2;
      break;
    case "qlora":
    case "qdylora":
      f *= 1.3;
      break;
    case "full":
    case "lora":
    case "dylora":
      break;
  }
  if (s.optimizerState === "paged" || s.optimizerState === "paged8bit") f *= 1.1;
  return f / (1 + 0.1 * Math.log2(s.microBatch));
}

/**
 * Short recipe label (`"NF4 + LoRA r=16 + gradient checkpointing"`).
 *
 * @param plan a plan from {@linkcode planMemory}
 * @returns the label
 * @example
 * ```ts
 * import { planLabel } from "./fit_plan.ts";
 * import { planMemory } from "./plan_memory.ts";
 * const l = planLabel(planMemory({ config: "7B", method: "qlora", r: 16, gradientCheckpointing: true }));
 * if (l !== "NF4 + LoRA r=16 + gradient checkpointing") throw new Error(l);
 * ```
 */
export function planLabel(plan: MemoryPlan): string {
  const s = plan.spec;
  let head: string;
  switch (s.method) {
    case "full":
      head = `Full fine-tuning (${s.weightDtype})`;
      break;
    case "galore":
    case "galore8bit":
      head = `GaLore${s.method === "galore8bit" ? " 8-bit" : ""} r=${s.galore.r}${
        s.layerwise ? " layer-wise" : ""
      }`;
      break;
    case "lora":
      head = `LoRA r=${s.r}`;
      break;
    case "dylora":
      head = `DyLoRA r≤${s.r}`;
      break;
    case "qlora":
      head = `${s.quantize.type.toUpperCase()} + LoRA r=${s.r}`;
      break;
    case "qdylora":
      head = `${s.quantize.type.toUpperCase()} + DyLoRA r≤${s.r}`;
      break;
  }
  const parts = [head];
  const st = s.optimizerState;
  // Optimizers outside the AdamW family (Lion, …) are named by their registry label.
  const adamFamily = ["adamw", "adamw8bit", "galore", "galore8bit"].includes(s.optimizer);
  if (!adamFamily) parts.push(`${st === "paged" ? "paged " : ""}${optimizerKind(s.optimizer).label}`);
  else if (s.method !== "galore8bit" && (st === "8bit" || st === "paged8bit")) {
    parts.push(st === "8bit" ? "8-bit Adam" : "paged 8-bit Adam");
  } else if (st === "paged") parts.push("paged Adam");
  else if (s.method === "galore8bit" && st === "paged8bit") parts.push("paged states");
  if (s.gradientCheckpointing) parts.push("gradient checkpointing");
  return parts.join(" + ");
}

/**
 * Ranks the cheapest ways to make `spec` fit in `budget` bytes of device memory.
 *
 * @param spec the requested plan
 * @param budget device bytes, or a string like `"24GB"`
 * @param options limit and methods to try
 * @returns fitting suggestions, best first (empty when nothing fits)
 * @throws {RangeError} for a negative budget
 * @example
 * ```ts
 * import { fitPlan } from "./fit_plan.ts";
 * const s = fitPlan({ config: "7B", method: "full", microBatch: 2, gradAccumSteps: 8 }, "24GB");
 * if (s.length === 0 || !(s[0].plan.total <= 24e9)) throw new Error("expected a fit");
 * if (!s[0].sentence.includes("fits llama-2-7b in 24.0 GB")) throw new Error(s[0].sentence);
 * ```
 */
export function fitPlan(spec: PlanSpec, budget: number | string, options?: FitPlanOptions): FitSuggestion[] {
  const bytes = parseBytes(budget);
  const req = resolvePlanSpec(spec);
  const o = fitPlanSchema.parse(options);
  const family = req.method === "dylora" || req.method === "qdylora"
    ? ["dylora", "qdylora"] as PlanMethod[]
    : ["full", "galore8bit", "lora", "qlora"] as PlanMethod[];
  const methods = [...new Set([...(o.methods ?? family), ...(o.methods ? [] : [req.method])])];
  for (const m of methods) {
    if (!PLAN_METHODS.includes(m)) {
      throw new RangeError(`fitPlan: unknown method "${m}"; use one of ${PLAN_METHODS.join(", ")}`);
    }
  }
  const effective = req.microBatch * req.gradAccumSteps;
  const micros: number[] = [];
  for (let m = req.microBatch; m >= 1; m--) if (effective % m === 0) micros.push(m);
  const ranks: number[] = [req.r];
  for (let r = req.r >> 1; r >= 4; r >>= 1) ranks.push(r);
  const states = [...new Set<OptimizerStatePrecision>([req.optimizerState, "fp32", "8bit", "paged8bit"])];
  const ckpts = [...new Set([req.gradientCheckpointing, true])];
  const reqQuality = quality(req, req.r);
  const reqSpeed = speed(req);

  const seen = new Set<string>();
  const out: FitSuggestion[] = [];
  for (const method of methods) {
    for (const optimizerState of states) {
      if (method === "galore8bit" && optimizerState === "fp32") continue; // same as 8bit
      for (const r of isAdapter(method) ? ranks : [req.r]) {
        for (const gradientCheckpointing of ckpts) {
          for (const microBatch of micros) {
            const galoreMethod = method === "galore" || method === "galore8bit";
            const eightBit = optimizerState === "8bit" || optimizerState === "paged8bit";
            const cand: PlanSpec = {
              ...spec,
              method,
              // the requested optimizer where it has this state precision (Lion: fp32), else AdamW's
              optimizer: galoreMethod
                ? undefined
                : eightBit
                ? "adamw8bit"
                : optimizerKind(req.optimizer).cost.galore || optimizerKind(req.optimizer).cost.eightBit
                ? "adamw"
                : req.optimizer,
              paged: optimizerState === "paged" || optimizerState === "paged8bit",
              r,
              gradientCheckpointing,
              microBatch,
              gradAccumSteps: effective / microBatch,
              ...(method === "galore8bit" ? { layerwise: true } : {}),
            };
            let plan: MemoryPlan;
            try {
              plan = planMemory(cand);
            } catch (e) {
              if (e instanceof RangeError) continue; // e.g. GaLore without a shape, or seed accounting
              throw e;
            }
            if (plan.total > bytes) continue;
            const sentence = sentenceFor(plan, bytes);
            if (seen.has(sentence)) continue;
            seen.add(sentence);
            out.push({
              plan,
              changes: changesFrom(req, plan),
              sentence,
              qualityLoss: Math.max(
                0,
                quality(plan.spec, req.r) - reqQuality,
              ),
              slowdown: Math.round(1000 * speed(plan.spec) / reqSpeed) / 1000,
            });
          }
        }
      }
    }
  }
  out.sort((a, b) =>
    a.qualityLoss - b.qualityLoss || a.changes.length - b.changes.length || a.slowdown - b.slowdown ||
    a.plan.total - b.plan.total || (a.sentence < b.sentence ? -1 : a.sentence > b.sentence ? 1 : 0)
  );
  return out.slice(0, o.limit);
}

function sentenceFor(plan: MemoryPlan, budget: number): string {
  const s = plan.spec;
  const host = plan.breakdown.hostOffloaded > 0
    ? `, ${formatGB(plan.breakdown.hostOffloaded)} paged to host`
    : "";
  return `${planLabel(plan)} fits ${s.modelLabel} in ${
    formatGB(budget)
  } with micro-batch ${s.microBatch} and ` +
    `accumulation ${s.gradAccumSteps} (${formatGB(plan.total)}${host}).`;
}

function changesFrom(req: ReturnType<typeof resolvePlanSpec>, plan: MemoryPlan): string[] {
  const s = plan.spec;
  const c: string[] = [];
  if (s.method !== req.method) c.push(`method ${req.method} → ${s.method}`);
  if (s.method === "galore8bit" && s.layerwise && !req.layerwise) c.push("layer-wise GaLore");
  const paged = (st: OptimizerStatePrecision) => st === "paged" || st === "paged8bit";
  if (s.method === "galore8bit") {
    // 8-bit moments come with the method; only paging is a separate change.
    if (paged(s.optimizerState) !== paged(req.optimizerState)) {
      c.push(`optimizer state paged ${paged(s.optimizerState) ? "on" : "off"}`);
    }
  } else if (s.optimizerState !== req.optimizerState) {
    c.push(`optimizer state ${req.optimizerState} → ${s.optimizerState}`);
  }
  if (isAdapter(s.method) && s.r !== req.r) c.push(`LoRA rank ${req.r} → ${s.r}`);
  if (s.gradientCheckpointing !== req.gradientCheckpointing) c.push("gradient checkpointing on");
  if (s.microBatch !== req.microBatch) {
    c.push(
      `micro-batch ${req.microBatch} → ${s.microBatch} with accumulation ${req.gradAccumSteps} → ${s.gradAccumSteps}`,
    );
  }
  return c;
}

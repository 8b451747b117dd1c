/**
 * Planner validation: the engine estimate (`estimateTrainingMemory` / `planForModel`)
 * against the peak tensor bytes the trainer measures, on the embedded model with 8 herald
 * examples in one micro-batch of 8 (padded to the longest), step 2 of 2 (optimizer state
 * already allocated, as the estimate assumes). For contrast, the framework-agnostic plan
 * (`planMemory` in fp32, PyTorch-style activation count) of the same run.
 *
 * Run: `deno run -A bench/plan_validation.ts` (prints a markdown table), or
 * `deno task bench --only plan`.
 * @module
 */
import type { BenchRow } from "./matmul_bench.ts";

/** One validated configuration. */
export interface PlanValidationCase {
  name: string;
  /** Options for the planner (`TrainerPlanOptions`). */
  plan: Record<string, unknown>;
  /** Options for `train()` beyond the shared ones. */
  train: Record<string, unknown>;
  /** Load the base in NF4 and attach LoRA r 8 on q, v. */
  quantize?: boolean;
  /** Attach LoRA r 8 on q, v. */
  lora?: boolean;
  /** Make that adapter DoRA (`useDora`). */
  dora?: boolean;
}

const LORA = { method: "lora", r: 8, targetModules: ["q_proj", "v_proj"] };

/** The configurations of the table. */
export const PLAN_VALIDATION_CASES: PlanValidationCase[] = [
  { name: "full fine-tuning (AdamW)", plan: {}, train: {} },
  { name: "LoRA r8 on q,v", plan: LORA, train: {}, lora: true },
  {
    name: "QLoRA (NF4 + LoRA r8 on q,v)",
    plan: { ...LORA, method: "qlora" },
    train: {},
    quantize: true,
    lora: true,
  },
  {
    name: "GaLore r32",
    plan: { optimizer: "galore", galore: { r: 32 } },
    train: { optimizer: "galore", galore: { r: 32 } },
  },
  {
    name: "full + gradient checkpointing",
    plan: { gradientCheckpointing: true },
    train: { gradientCheckpointing: true },
  },
  {
    name: "QLoRA + gradient checkpointing",
    plan: { ...LORA, method: "qlora", gradientCheckpointing: true },
    train: { gradientCheckpointing: true },
    quantize: true,
    lora: true,
  },
  {
    name: "GaLore r32 layer-wise",
    plan: { optimizer: "galore", galore: { r: 32, layerwise: true } },
    train: { optimizer: "galore", galore: { r: 32, layerwise: true }, maxGradNorm: 0 },
  },
  { name: "DoRA r8 on q,v", plan: { ...LORA, useDora: true }, train: {}, lora: true, dora: true },
  {
    name: "QDoRA (NF4 + DoRA r8 on q,v)",
    plan: { ...LORA, method: "qlora", useDora: true },
    train: {},
    quantize: true,
    lora: true,
    dora: true,
  },
  { name: "full fine-tuning (Lion)", plan: { optimizer: "lion" }, train: { optimizer: "lion" } },
];

/** One measured configuration. */
export interface PlanValidationResult {
  name: string;
  /** Padded tokens per sequence. */
  seqLen: number;
  /** Engine estimate of the peak tensor bytes. */
  predicted: number;
  /** Measured peak tensor bytes of step 2 above what was alive before loading the model. */
  measured: number;
  /** Predicted and measured `activations` of the breakdown. */
  predictedActivations: number;
  measuredActivations: number;
  /** The framework-agnostic plan's total (planMemory, fp32) for the same run. */
  frameworkPlan: number;
  /** Predicted and measured breakdown parts (weights, adapters, gradients, optimizer, …). */
  predictedBreakdown: Record<string, number>;
  measuredBreakdown: Record<string, number>;
  /** `planForModel()` total for the same run (must equal `predicted`). */
  planForModelTotal: number;
  /** Tensor bytes alive after loading that belong to neither weights nor adapters (a leak if > 0). */
  untracked: number;
  /** Where the estimate puts the peak. */
  phase: string;
}

/** Trains each case for 2 steps and compares its step-2 peak with the estimate. */
export async function measurePlanCases(
  cases: PlanValidationCase[] = PLAN_VALIDATION_CASES,
): Promise<PlanValidationResult[]> {
  const tf = await import("@tensorflow/tfjs-core");
  const { initEngine } = await import("../lib/engine/backend.ts");
  const { loadTokenizer } = await import("../lib/io/tokenizer.ts");
  const { EMBEDDED_DATA_DIR, EMBEDDED_MODEL_DIR } = await import("../lib/models/embedded.ts");
  const { loadModel } = await import("../lib/models/load_model.ts");
  const { attachLoRA } = await import("../lib/adapters/attach.ts");
  const { train } = await import("../lib/train/trainer.ts");
  const { tokenizeRecords } = await import("../lib/train/data.ts");
  const { readJsonl } = await import("../lib/train/recipe.ts");
  const { estimateTrainingMemory } = await import("../lib/plan/engine_estimate.ts");
  const { planForModel, planSpecForTrainer } = await import("../lib/plan/plan_for_model.ts");
  const { planMemory } = await import("../lib/plan/plan_memory.ts");

  await initEngine();
  const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const records = (await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`)).slice(0, 8);
  const seqLen = Math.max(...tokenizeRecords(records, tokenizer).map((e) => e.ids.length));
  const config = JSON.parse(await Deno.readTextFile(`${EMBEDDED_MODEL_DIR}/config.json`));
  const out: PlanValidationResult[] = [];
  for (const c of cases) {
    const before = tf.memory().numBytes;
    const model = await loadModel(EMBEDDED_MODEL_DIR, c.quantize ? { quantize: "nf4" } : {});
    try {
      if (c.lora) attachLoRA(model, { r: 8, targetModules: ["q_proj", "v_proj"], useDora: c.dora ?? false });
      // Tensors alive now that are neither weights nor adapters would be a leak; reported, not hidden.
      let own = 4 * (model.embedTokens.size + (2 * model.layers.length + 1) * model.config.hiddenSize);
      for (const lin of model.linears()) {
        for (const s of lin.storage()) if (s.dtype === "fp32" || s.dtype === "adapter-fp32") own += s.bytes;
      }
      const untracked = tf.memory().numBytes - before - own;
      const history = await train(model, records, {
        tokenizer,
        batchSize: 8,
        steps: 2,
        shuffleSeed: false,
        lr: 1e-4,
        ...c.train,
      });
      const m = history[1].memory;
      const plan = { ...c.plan, batchSize: 8, seqLen };
      const e = estimateTrainingMemory(config, plan);
      out.push({
        name: c.name,
        seqLen,
        predicted: e.peakTensorBytes,
        measured: (m.peakTensorBytes ?? NaN) - before,
        predictedActivations: e.breakdown.activations,
        measuredActivations: m.breakdown?.activations ?? NaN,
        frameworkPlan: planMemory(planSpecForTrainer(config, plan)).total,
        phase: e.peakPhase,
        predictedBreakdown: { ...e.breakdown },
        measuredBreakdown: { ...m.breakdown },
        planForModelTotal: planForModel(config, plan).total,
        untracked,
      });
    } finally {
      model.dispose();
    }
  }
  return out;
}

/** Bench rows: predicted (value) vs measured (baseline) peak tensor bytes per method, ratio predicted/measured. */
export async function runPlanValidation(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const r of await measurePlanCases()) {
    rows.push({
      name: `plan vs measured peak tensor bytes, ${r.name}`,
      unit: "bytes",
      value: r.predicted,
      baseline: r.measured,
      ratio: r.predicted / r.measured,
    });
    rows.push({
      name: `plan vs measured activations, ${r.name}`,
      unit: "bytes",
      value: r.predictedActivations,
      baseline: r.measuredActivations,
      ratio: r.predictedActivations / r.measuredActivations,
    });
    rows.push({
      name: `framework-style plan (planMemory fp32) vs measured, ${r.name}`,
      unit: "bytes",
      value: r.frameworkPlan,
      baseline: r.measured,
      ratio: r.frameworkPlan / r.measured,
    });
  }
  return rows;
}

/** The README table. */
export function planValidationMarkdown(results: PlanValidationResult[]): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(2);
  const err = (p: number, m: number) => `${p >= m ? "+" : ""}${((p / m - 1) * 100).toFixed(2)}%`;
  return [
    `Embedded model, one micro-batch of 8 herald examples × ${
      results[0]?.seqLen
    } tokens, step 2; MiB = 2^20 bytes.`,
    "",
    "| method | predicted peak (MiB) | measured peak (MiB) | error | predicted / measured activations (MiB) | peak at | framework-style plan (MiB) |",
    "|---|---:|---:|---:|---:|---|---:|",
    ...results.map((r) =>
      `| ${r.name} | ${mib(r.predicted)} | ${mib(r.measured)} | ${err(r.predicted, r.measured)} | ` +
      `${mib(r.predictedActivations)} / ${mib(r.measuredActivations)} | ${r.phase} | ${
        mib(r.frameworkPlan)
      } |`
    ),
  ].join("\n");
}

if (import.meta.main) {
  console.log(planValidationMarkdown(await measurePlanCases()));
}

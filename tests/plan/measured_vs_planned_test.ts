/**
 * The engine estimate against the trainer's own measurement: the embedded model, 8 herald
 * examples in one micro-batch of 8, 2 steps, for full fine-tuning, LoRA, QLoRA and GaLore
 * (and the block-wise modes). The prediction must be within 10% of step 2's
 * `peakTensorBytes` and of its `activations` part.
 *
 * Untracked bytes: tensors alive before `train()` that belong to neither the model's
 * weights nor its adapters (e.g. an initial tensor a `tf.variable` was made from and that
 * was never disposed) are subtracted from the measured peak; they are printed.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { loadTokenizer } from "../../lib/io/tokenizer.ts";
import { EMBEDDED_DATA_DIR, EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import { tokenizeRecords, type TrainingRecord } from "../../lib/train/data.ts";
import { estimateTrainingMemory } from "../../lib/plan/engine_estimate.ts";
import type { TrainerPlanOptions } from "../../lib/plan/plan_for_model.ts";
import { planForModel } from "../../lib/plan/plan_for_model.ts";

await initEngine();
const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
const records: TrainingRecord[] = (await Deno.readTextFile(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`))
  .trim().split("\n").slice(0, 8).map((l) => JSON.parse(l));
// One micro-batch of all 8 examples, padded to the longest.
const seqLen = Math.max(...tokenizeRecords(records, tokenizer).map((e) => e.ids.length));
const config = JSON.parse(await Deno.readTextFile(`${EMBEDDED_MODEL_DIR}/config.json`));

interface Case {
  name: string;
  plan: TrainerPlanOptions;
  quantize?: boolean;
  lora?: boolean;
  train: TrainOptions;
}

const LORA: TrainerPlanOptions = { method: "lora", loraRank: 8, loraTargets: ["q_proj", "v_proj"] };
const CASES: Case[] = [
  { name: "full", plan: {}, train: {} },
  { name: "LoRA r8 (q,v)", plan: LORA, lora: true, train: {} },
  { name: "QLoRA nf4 + LoRA r8", plan: { ...LORA, method: "qlora" }, quantize: true, lora: true, train: {} },
  {
    name: "GaLore r32",
    plan: { optimizer: "galore", galore: { rank: 32 } },
    train: { optimizer: "galore", galore: { rank: 32 } },
  },
  {
    name: "full + checkpointing",
    plan: { gradientCheckpointing: true },
    train: { gradientCheckpointing: true },
  },
  {
    name: "QLoRA + checkpointing",
    plan: { ...LORA, method: "qlora", gradientCheckpointing: true },
    quantize: true,
    lora: true,
    train: { gradientCheckpointing: true },
  },
  {
    name: "GaLore r32 layer-wise",
    plan: { optimizer: "galore", galore: { rank: 32, layerwise: true } },
    train: { optimizer: "galore", galore: { rank: 32, layerwise: true }, maxGradNorm: 0 },
  },
];

/** Tensor bytes of the model's own weights and adapters (what a step starts with besides optimizer state). */
function ownTensorBytes(model: LlamaForCausalLM): number {
  const D = model.config.hiddenSize;
  let bytes = 4 * (model.embedTokens.size + (2 * model.layers.length + 1) * D);
  for (const lin of model.linears()) {
    for (const s of lin.storage()) if (s.dtype === "fp32" || s.dtype === "adapter-fp32") bytes += s.bytes;
  }
  return bytes;
}

interface Row {
  name: string;
  predicted: number;
  measured: number;
  predictedActivations: number;
  measuredActivations: number;
  untracked: number;
  phase: string;
}

const rows: Row[] = [];
const mib = (b: number) => (b / 2 ** 20).toFixed(2);
const pct = (p: number, m: number) => `${((p / m - 1) * 100).toFixed(2)}%`;

for (const c of CASES) {
  Deno.test(`engine estimate within 10% of the measured peak: ${c.name}`, async () => {
    const before = tf.memory().numBytes;
    const model = await loadModel(EMBEDDED_MODEL_DIR, c.quantize ? { quantize: "nf4" } : {});
    try {
      if (c.lora) attachLoRA(model, { r: 8, targetModules: ["q_proj", "v_proj"] });
      const untracked = tf.memory().numBytes - before - ownTensorBytes(model);
      const history = await train(model, records, {
        tokenizer,
        batchSize: 8,
        steps: 2,
        shuffleSeed: false,
        lr: 1e-4,
        ...c.train,
      });
      const m = history[1].memory; // step 2: optimizer state exists at the start, as predicted
      const measured = m.peakTensorBytes! - before - untracked;
      const e = estimateTrainingMemory(config, { ...c.plan, batchSize: 8, seqLen });
      rows.push({
        name: c.name,
        predicted: e.peakTensorBytes,
        measured,
        predictedActivations: e.breakdown.activations,
        measuredActivations: m.breakdown!.activations,
        untracked,
        phase: e.peakPhase,
      });
      const err = Math.abs(e.peakTensorBytes / measured - 1);
      assert(
        err < 0.1,
        `${c.name}: predicted ${e.peakTensorBytes} B, measured ${measured} B (${
          pct(e.peakTensorBytes, measured)
        })`,
      );
      const actErr = Math.abs(e.breakdown.activations / m.breakdown!.activations - 1);
      assert(
        actErr < 0.1,
        `${c.name}: activations predicted ${e.breakdown.activations}, measured ${m.breakdown!.activations}`,
      );
      for (const k of ["weights", "weights4bitHost", "adapters", "gradients", "optimizer"] as const) {
        assert(
          e.breakdown[k] === m.breakdown![k],
          `${c.name}: ${k} predicted ${e.breakdown[k]}, measured ${m.breakdown![k]}`,
        );
      }
      // planForModel() carries the same prediction as a MemoryPlan.
      assert(
        planForModel(config, { ...c.plan, batchSize: 8, seqLen }).total === e.peakTensorBytes,
        "planForModel total",
      );
    } finally {
      model.dispose();
    }
  });
}

Deno.test("predicted vs measured table", () => {
  const lines = [
    `embedded model, batch 8 × ${seqLen} tokens, step 2 (MiB = 2^20 B)`,
    "| method | predicted peak | measured peak | error | predicted act. | measured act. | peak phase | untracked |",
    "|---|---:|---:|---:|---:|---:|---|---:|",
    ...rows.map((r) =>
      `| ${r.name} | ${mib(r.predicted)} | ${mib(r.measured)} | ${pct(r.predicted, r.measured)} | ` +
      `${mib(r.predictedActivations)} | ${mib(r.measuredActivations)} | ${r.phase} | ${r.untracked} B |`
    ),
  ];
  console.log(lines.join("\n"));
});

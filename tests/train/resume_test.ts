/**
 * Must-show of issue 12: a run interrupted after step k (a crash right after its save) and
 * resumed with `resumeFrom` gives the same history and the same final weights, bit for
 * bit, as the uninterrupted run: full-parameter AdamW, 8-bit AdamW (8-bit states in use),
 * GaLore (projector refresh every 2 steps), DyLoRA (sampled ranks) and LoRA with dropout.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";
import { attachDyLoRA, attachLoRA } from "../../lib/adapters/attach.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import type { StepRecord } from "../../lib/train/types.ts";
import { listSaves } from "../../lib/train/training_state.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";

await initEngine({ backend: "cpu" });

/** up_proj/gate_proj/down_proj have 64·128 = 8192 ≥ 4096 elements: 8-bit AdamW keeps them in 8 bits. */
const CONFIG = {
  model_type: "llama",
  vocab_size: 40,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const STEPS = 6;
/** 9 examples, 4 per step: the data is reshuffled within the run. */
const DATA = Array.from({ length: 9 }, (_, i) => ({
  ids: Array.from({ length: 5 + (i % 4) }, (_, t) => (i * 7 + t * 3) % 40),
}));

interface Case {
  name: string;
  model: () => LlamaForCausalLM | Promise<LlamaForCausalLM>;
  options: TrainOptions;
  cuts: number[];
}

const CASES: Case[] = [
  {
    name: "AdamW, full parameters, accumulation",
    model: () => initModel(CONFIG, { seed: 1 }),
    options: {
      optimizer: "adamw",
      lr: 3e-3,
      batchSize: 2,
      gradAccumSteps: 2,
      warmupSteps: 2,
      weightDecay: 0.01,
    },
    cuts: [1, 3, 5],
  },
  {
    name: "8-bit AdamW, full parameters",
    model: () => initModel(CONFIG, { seed: 2 }),
    options: { optimizer: "adamw8bit", lr: 3e-3, batchSize: 4 },
    cuts: [2, 4],
  },
  {
    name: "GaLore (refresh every 2 steps), gradient checkpointing",
    model: () => initModel(CONFIG, { seed: 3 }),
    options: {
      optimizer: "galore",
      galore: { r: 8, updateProjGap: 2 },
      lr: 3e-3,
      batchSize: 4,
      gradientCheckpointing: true,
    },
    cuts: [1, 3, 4],
  },
  {
    name: "8-bit GaLore, layer-wise",
    model: () => initModel(CONFIG, { seed: 4 }),
    options: {
      optimizer: "galore8bit",
      galore: { r: 8, updateProjGap: 2, layerwise: true },
      lr: 3e-3,
      batchSize: 4,
      maxGradNorm: 0,
    },
    cuts: [3],
  },
  {
    name: "Lion, full parameters",
    model: () => initModel(CONFIG, { seed: 8 }),
    options: { optimizer: "lion", lr: 3e-4, batchSize: 4 },
    cuts: [3],
  },
  {
    name: "DyLoRA (a rank sampled every step)",
    model: () => attachDyLoRA(initModel(CONFIG, { seed: 5 }), { r: 4, seed: 9 }),
    options: { lr: 1e-2, batchSize: 4 },
    cuts: [2, 5],
  },
  {
    name: "QLoRA (nf4 base, LoRA on every linear)",
    model: async () =>
      attachLoRA(await loadModel(await baseCheckpoint(), { quantize: "nf4" }), { r: 4, seed: 2 }),
    options: { lr: 1e-2, batchSize: 4 },
    cuts: [2],
  },
  {
    name: "LoRA with dropout",
    model: () => attachLoRA(initModel(CONFIG, { seed: 6 }), { r: 4, dropout: 0.2, seed: 3 }),
    options: { lr: 1e-2, batchSize: 4 },
    cuts: [3],
  },
];

/** The measured fields (seconds, memory) differ between runs by nature; everything else must match. */
function comparable(h: StepRecord[]) {
  return h.map((r) => ({ step: r.step, loss: r.loss, lr: r.lr, tokens: r.tokens, gradNorm: r.gradNorm }));
}

function weights(model: LlamaForCausalLM): Map<string, number[]> {
  return new Map(model.trainableParams().map((p) => [p.name, [...p.variable.dataSync()]]));
}

class Crash extends Error {}

let base: string | undefined;
/** A dense checkpoint to load with 4-bit quantization (written once). */
async function baseCheckpoint(): Promise<string> {
  if (!base) {
    base = await Deno.makeTempDir({ prefix: "nbtune_resume_base_" });
    const m = initModel(CONFIG, { seed: 7 });
    await saveCheckpoint(m, base);
    m.dispose();
  }
  return base;
}

for (const c of CASES) {
  Deno.test(`resume: ${c.name}, interrupted after step ${c.cuts.join(", ")}, equals the uninterrupted run bit for bit`, async () => {
    const root = await Deno.makeTempDir({ prefix: "nbtune_resume_" });
    const base: TrainOptions = { ...c.options, steps: STEPS, shuffleSeed: 5, measureMemory: false };
    const ref = await c.model();
    const want = comparable(await train(ref, DATA, base));
    const wantW = weights(ref);
    ref.dispose();
    const before = tf.memory().numTensors;
    for (const cut of c.cuts) {
      const out = `${root}/cut-${cut}`;
      const first = await c.model();
      await assertRejects(
        () =>
          train(first, DATA, {
            ...base,
            saveEvery: 1,
            outputDir: out,
            onStep: (r) => {
              if (r.step === cut) throw new Crash("killed");
            },
          }),
        Crash,
      );
      first.dispose();
      const second = await c.model(); // a fresh process would build the same model again
      const got = comparable(
        await train(second, DATA, { ...base, saveEvery: 1, outputDir: out, resumeFrom: out }),
      );
      assertEquals(got, want, `history after resuming from step ${cut}`);
      for (const [name, w] of weights(second)) {
        assertEquals(w, wantW.get(name), `${name} after resuming at ${cut}`);
      }
      second.dispose();
    }
    assertEquals(tf.memory().numTensors, before, "no tensor leaked");
    await Deno.remove(root, { recursive: true });
  });
}

Deno.test("saveTotalLimit keeps the last K saves; resuming with other options or data is refused, naming the field", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_resume_" });
  const m = attachLoRA(initModel(CONFIG, { seed: 6 }), { r: 2 });
  const o: TrainOptions = {
    lr: 1e-2,
    batchSize: 4,
    steps: 5,
    measureMemory: false,
    saveEvery: 1,
    outputDir: root,
  };
  await train(m, DATA, { ...o, saveTotalLimit: 2 });
  assertEquals((await listSaves(root)).map((s) => s.step), [4, 5]);
  for (
    const f of [
      "adapter_config.json",
      "adapter_model.safetensors",
      "trainer_state.json",
      "optimizer.safetensors",
    ]
  ) {
    await Deno.stat(`${root}/step-5/${f}`);
  }
  await assertRejects(
    () => train(m, DATA, { ...o, lr: 2e-2, resumeFrom: `${root}/step-4` }),
    RangeError,
    "lr = 0.01",
  );
  await assertRejects(() => train(m, DATA.slice(1), { ...o, resumeFrom: root }), RangeError, "data");
  await assertRejects(
    () => train(m, DATA, { ...o, resumeFrom: `${root}/nothing` }),
    Deno.errors.NotFound,
    "resumeFrom",
  );
  const resumed = await train(m, DATA, { ...o, resumeFrom: root });
  assert(resumed.length === 5 && resumed[4].step === 5, "resuming a finished run returns its history");
  m.dispose();
  await Deno.remove(root, { recursive: true });
});

Deno.test("saveTotalLimit also keeps the save with the best eval loss", async () => {
  const root = await Deno.makeTempDir({ prefix: "nbtune_resume_" });
  const m = attachLoRA(initModel(CONFIG, { seed: 6 }), { r: 2 });
  const h = await train(m, DATA, {
    lr: 1e-2,
    batchSize: 4,
    steps: 6,
    measureMemory: false,
    saveEvery: 1,
    evalEvery: 1,
    evalData: DATA.slice(0, 3),
    outputDir: root,
    saveTotalLimit: 2,
    divergence: { lossSpikeFactor: 0 },
    // after step 2 the (frozen) final norm is spoiled, so later eval losses are worse
    onStep: (r) => {
      if (r.step === 2) tf.tidy(() => m.norm.weight.assign(tf.mul(m.norm.weight, 5)));
    },
  });
  const best = h.reduce((b, r) => (r.evalLoss! < b.evalLoss! ? r : b)).step;
  assert(best < 5, `the best eval loss should come early here: ${h.map((r) => r.evalLoss!.toFixed(3))}`);
  const kept = (await listSaves(root)).map((s) => s.step);
  assertEquals(kept, [...new Set([best, 5, 6])].sort((a, b) => a - b));
  m.dispose();
  await Deno.remove(root, { recursive: true });
});

/**
 * Packing equivalence: a packed micro-batch (examples laid end to end, block-diagonal causal mask,
 * positions restarting per example) gives the same loss and the same gradients as the same
 * examples unpacked, through both the taped loss and the block-wise backward the trainer uses.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows, relError } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { makeMicroBatch } from "../../lib/train/batching.ts";
import { microBatchLossSum } from "../../lib/train/loss.ts";
import { blockwiseBackward } from "../../lib/train/blockwise.ts";
import { makePackedMicroBatch, packExamples, paddingFractions } from "../../lib/train/packing.ts";
import { type Example, IGNORE_INDEX } from "../../lib/train/data.ts";
import type { LlamaForCausalLM } from "../../lib/models/llama.ts";

await initEngine({ backend: "cpu" });
const CONFIG = {
  model_type: "qwen2",
  vocab_size: 40,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
};

/** Examples of lengths 3..9 with random ids; some prompts masked. */
function examples(n: number, seed: number): Example[] {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, (_, i) => {
    const L = 3 + Math.floor(rnd() * 7);
    const ids = Array.from({ length: L }, () => 1 + Math.floor(rnd() * 38));
    const prompt = i % 2 ? Math.floor(L / 2) : 0;
    return { ids, labels: ids.map((id, t) => (t < prompt ? IGNORE_INDEX : id)) };
  });
}

function gradsOf(
  model: LlamaForCausalLM,
  loss: () => tf.Scalar,
): { loss: number; grads: Map<string, Float32Array> } {
  const params = model.trainableParams();
  const { value, grads } = tf.variableGrads(loss, params.map((p) => p.variable));
  const out = new Map<string, Float32Array>();
  for (const p of params) out.set(p.name, grads[p.variable.name].dataSync() as Float32Array);
  const l = value.dataSync()[0];
  value.dispose();
  tf.dispose(Object.values(grads));
  return { loss: l, grads: out };
}

function assertSameGrads(a: Map<string, Float32Array>, b: Map<string, Float32Array>, what: string): void {
  assertEquals([...a.keys()].sort(), [...b.keys()].sort());
  for (const [name, g] of a) {
    const err = relError(g, b.get(name)!);
    assert(err < 1e-4, `${what}: gradient of ${name} differs by ${err}`);
  }
}

Deno.test("a packed micro-batch gives the unpacked loss and gradients (full fine-tuning, taped loss)", () => {
  const model = initModel(CONFIG, { seed: 3, std: 0.2 });
  const exs = examples(7, 11);
  const rows = packExamples(exs, 16);
  assert(rows.length < exs.length && rows.some((r) => r.length > 1), "several examples share a row");
  const before = tf.memory().numTensors;
  const packed = gradsOf(model, () => microBatchLossSum(model, makePackedMicroBatch(rows, 0)));
  const unpacked = gradsOf(
    model,
    () => tf.addN(exs.map((e) => microBatchLossSum(model, makeMicroBatch([e], 0)))),
  );
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
  assert(Math.abs(packed.loss - unpacked.loss) / unpacked.loss < 1e-5, `${packed.loss} vs ${unpacked.loss}`);
  assertSameGrads(packed.grads, unpacked.grads, "taped");
  // Without the block-diagonal mask the rows would mix examples: the loss must then differ.
  const b = makePackedMicroBatch(rows, 0);
  const mixed = tf.tidy(() =>
    microBatchLossSum(model, { ...b, segmentIds: undefined, positionIds: undefined }).dataSync()[0]
  );
  assert(Math.abs(mixed - unpacked.loss) / unpacked.loss > 1e-3, "the mask matters");
  model.dispose();
});

Deno.test("packed == unpacked through blockwiseBackward with a LoRA adapter (the trainer's path)", () => {
  const model = initModel(CONFIG, { seed: 5, std: 0.2 });
  attachLoRA(model, { r: 2, targetModules: "all-linear" });
  for (const p of model.trainableParams()) {
    if (p.name.includes("lora_B")) p.variable.assign(tf.randomNormal(p.variable.shape, 0, 0.1, "float32", 1));
  }
  const exs = examples(6, 23);
  const collect = (batches: ReturnType<typeof makeMicroBatch>[]) => {
    const sums = new Map<string, Float32Array>();
    let loss = 0;
    for (const batch of batches) {
      loss += blockwiseBackward(model, batch, 1, (params, grads) => {
        params.forEach((p, i) => {
          const g = grads[i].dataSync() as Float32Array;
          const acc = sums.get(p.name);
          if (acc) { for (let j = 0; j < g.length; j++) acc[j] += g[j]; }
          else sums.set(p.name, Float32Array.from(g));
        });
      });
    }
    return { loss, sums };
  };
  const packed = collect([makePackedMicroBatch(packExamples(exs, 20), 0)]);
  const unpacked = collect(exs.map((e) => makeMicroBatch([e], 0)));
  assert(Math.abs(packed.loss - unpacked.loss) / unpacked.loss < 1e-5, `${packed.loss} vs ${unpacked.loss}`);
  assertSameGrads(packed.sums, unpacked.sums, "blockwise");
  model.dispose();
});

Deno.test("packing refuses an example longer than the row and reports the padding it saves", () => {
  assertThrows(
    () => packExamples(examples(3, 1).concat([{ ids: Array(30).fill(1), labels: Array(30).fill(1) }]), 16),
    RangeError,
    "example 3 has 30 tokens",
  );
  const f = paddingFractions(examples(40, 7), 4, 32);
  assert(f.packed < f.unpacked / 2, JSON.stringify(f));
});

Deno.test("train({ packing: true }) takes the same first step as unpacked training and reports the padding saved", async () => {
  const { train } = await import("../../lib/train/trainer.ts");
  const records = examples(8, 31).map((e) => ({ ids: e.ids, labels: e.labels }));
  const run = async (packing: boolean) => {
    const model = initModel(CONFIG, { seed: 9, std: 0.2 });
    const logs: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => logs.push(a.join(" "));
    try {
      const h = await train(model, records, {
        steps: 1,
        batchSize: 4,
        gradAccumSteps: 2,
        shuffleSeed: false,
        measureMemory: false,
        packing,
        tokenize: { maxLength: 24 },
      });
      const w = model.layers[0].linears.q_proj.denseWeight();
      const weights = w.dataSync() as Float32Array;
      w.dispose();
      model.dispose();
      return { loss: h[0].loss, weights, logs };
    } finally {
      console.log = log;
    }
  };
  const packed = await run(true), plain = await run(false);
  assert(Math.abs(packed.loss - plain.loss) / plain.loss < 1e-5, `${packed.loss} vs ${plain.loss}`);
  assert(relError(packed.weights, plain.weights) < 1e-4, "the same update");
  assert(
    packed.logs.some((l) => /packing into rows of 24 tokens: padding [\d.]+% -> [\d.]+%/.test(l)),
    packed.logs.join("\n"),
  );
});

import { planForModel, planSpecForTrainer } from "../../lib/plan/plan_for_model.ts";
import { planMemory } from "../../lib/plan/plan_memory.ts";
import { assertEquals, assertThrows } from "./_assert.ts";

const MODEL = {
  config: {
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 100,
  },
};

Deno.test("planForModel() plans our engine in fp32 for every part", () => {
  const p = planForModel(MODEL, { batchSize: 2, seqLen: 16, optimizer: "adamw" });
  assertEquals(p.breakdown.weights, p.params * 4);
  assertEquals(p.breakdown.gradients, p.params * 4);
  assertEquals(p.breakdown.optimizerStates, p.params * 8);
  assertEquals(p.spec.computeDtype, "fp32");
});

Deno.test("planSpecForTrainer() maps GaLore and 8-bit optimizers to methods and states", () => {
  const g = planSpecForTrainer("1B", {
    optimizer: "galore8bit",
    galore: { r: 64, layerwise: true, updateProjGap: 200 },
  });
  assertEquals(g.method, "galore8bit");
  assertEquals(g.galore, { r: 64 });
  assertEquals(g.layerwise, true);
  assertEquals(
    planMemory(planSpecForTrainer("1B", { method: "lora", optimizer: "adamw8bit", paged: true })).spec
      .optimizerState,
    "paged8bit",
  );
  assertEquals(planSpecForTrainer("1B", { method: "qlora", quantize: false }).method, "lora");
});

Deno.test("planSpecForTrainer() ignores lr but rejects unknown keys and GaLore with adapters", () => {
  planSpecForTrainer(MODEL, { lr: 1e-3 } as never);
  assertThrows(() => planSpecForTrainer(MODEL, { batchsize: 2 } as never), TypeError, "batchsize");
  assertThrows(
    () => planSpecForTrainer(MODEL, { method: "lora", optimizer: "galore" }),
    RangeError,
    "cannot be combined",
  );
});

import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { autoCheckpointing, methodOf } from "../../lib/train/auto_checkpoint.ts";

await initEngine();

Deno.test("autoCheckpointing: on when one tape would overflow the wasm heap, off when it fits, with a message", () => {
  // A small model with a large vocabulary: the logits dominate, as with SmolLM's 49152 tokens.
  const model = initModel({
    model_type: "llama",
    vocab_size: 49152,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  }, { seed: 1 });
  try {
    attachLoRA(model, { r: 4, targetModules: "all-linear" });
    assertEquals(methodOf(model), "lora");
    const small = autoCheckpointing(model, { batchSize: 1, seqLen: 16, gradAccumSteps: 1 });
    assert(!small.on && small.predictedBytes! > 0, JSON.stringify(small));
    const big = autoCheckpointing(model, { batchSize: 8, seqLen: 512, gradAccumSteps: 1 });
    assert(big.on, `expected on, predicted ${big.predictedBytes}`);
    assert(/gradientCheckpointing: false/.test(big.message) && /8 x 512/.test(big.message), big.message);
    // Bigger batches never predict less.
    assert(big.predictedBytes! > small.predictedBytes!);
  } finally {
    model.dispose();
  }
});

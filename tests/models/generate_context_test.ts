/**
 * Prompts longer than the model's context (issue 12: `generate` returned "" for them): refused with
 * the prompt's token count and max_position_embeddings; a prompt that fits gets new tokens until the
 * context is full (P tokens → at most max_position_embeddings - P + 1), in generate, generateAsync
 * and chat alike.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { chat, generate, generateAsync } from "../../lib/models/generate.ts";
import { createTokenizer } from "../../lib/io/tokenizer.ts";

await initEngine({ backend: "cpu" });
const MAX = 16;
// one token per character, no eos: generation only stops at maxNewTokens or the context's end
const tok = createTokenizer({
  tokenizerJson: { model: { type: "BPE", vocab: { a: 0, b: 1 }, merges: [] } },
  tokenizerConfig: { chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}" },
});
const model = () =>
  initModel({
    model_type: "llama",
    vocab_size: 2,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    max_position_embeddings: MAX,
  }, { seed: 1 });

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert(e instanceof RangeError, String(e));
    return e.message;
  }
  throw new Error("expected a refusal");
}

Deno.test("a prompt longer than max_position_embeddings is refused with its token count and the limit", async () => {
  const m = model();
  const before = tf.memory().numTensors;
  try {
    const long = "ab".repeat(9); // 18 tokens
    const msg = refusal(() => generate(m, tok, long, { maxNewTokens: 4 }));
    assertEquals(
      msg,
      "generate: the prompt is 18 tokens but the model's context (max_position_embeddings) is 16: shorten it " +
        "to at most 16 tokens (fewer leave room for the reply); nothing was generated",
    );
    assert(
      refusal(() => generate(m, tok, ["ab", long], { maxNewTokens: 4 })).startsWith(
        "generate: prompt 1 is 18 tokens",
      ),
    );
    assert(refusal(() => chat(m, tok, [{ role: "user", content: long }])).includes("18 tokens"));
    const err = await generateAsync(m, tok, long, { maxNewTokens: 4 }).catch((e) => e as Error);
    assert(err instanceof RangeError && err.message.includes("is 18 tokens"), String(err));
    assertEquals(tf.memory().numTensors, before, "a refused prompt leaks no tensors (no KV cache was made)");
  } finally {
    m.dispose();
  }
});

Deno.test("a prompt that fits gets new tokens until the context is full: P tokens → at most MAX - P + 1", () => {
  const m = model();
  try {
    for (const [p, want] of [[16, 1], [14, 3], [4, 8]] as const) {
      const n: number[] = [];
      generate(m, tok, "a".repeat(p), { maxNewTokens: 8, onToken: (_, e) => n.push(e.index) });
      assertEquals(n.length === 0 ? 0 : n[n.length - 1] + 1, want, `prompt of ${p} tokens`);
    }
  } finally {
    m.dispose();
  }
});

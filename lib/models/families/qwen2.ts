/**
 * Qwen2 / Qwen2.5 (`model_type: "qwen2"`): the Llama layout (RoPE, grouped-query attention,
 * SwiGLU, RMSNorm) with biases on the q, k and v projections (`nn.Linear(..., bias=True)` in
 * Transformers' `Qwen2Attention`; `o_proj` and the MLP have none). The small Qwen2.5 models
 * tie their embeddings (`tie_word_embeddings: true`); `Qwen2Config` defaults it to false.
 * Sliding-window attention (`use_sliding_window: true`, or `layer_types` holding
 * `"sliding_attention"`) is not implemented, so such a config is refused.
 * @module
 */
import type { ModelFamily } from "../families.ts";
import { LLAMA_LIKE } from "./llama_like.ts";

/**
 * Refuses the Qwen2 config keys that change the math and that our engine does not implement,
 * naming each key and its value.
 *
 * @example
 * ```ts
 * import { checkQwen2Config } from "./qwen2.ts";
 * checkQwen2Config({ use_sliding_window: false }, "config.json");
 * let msg = "";
 * try { checkQwen2Config({ use_sliding_window: true }, "config.json"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("use_sliding_window")) throw new Error(msg);
 * ```
 */
export function checkQwen2Config(raw: Record<string, unknown>, source: string): void {
  const bad: string[] = [];
  if (raw.use_sliding_window === true) bad.push("use_sliding_window: true");
  if (Array.isArray(raw.layer_types) && raw.layer_types.some((t) => t !== "full_attention")) {
    bad.push(`layer_types: ${JSON.stringify([...new Set(raw.layer_types)])}`);
  }
  if (typeof raw.attention_dropout === "number" && raw.attention_dropout !== 0) {
    bad.push(`attention_dropout: ${raw.attention_dropout}`);
  }
  if (bad.length) {
    throw new RangeError(
      `${source}: Qwen2 config key(s) ${bad.join(", ")} change the model's math and are not implemented ` +
        "(sliding-window attention, attention dropout); set use_sliding_window to false (every layer " +
        '"full_attention") and attention_dropout to 0, or use another engine',
    );
  }
}

/** The Qwen2 row of `MODEL_FAMILIES`. */
export const QWEN2_FAMILY: ModelFamily = {
  modelType: "qwen2",
  aliases: [],
  doc: "Qwen2 / Qwen2.5 (Llama layout with q/k/v biases)",
  ...LLAMA_LIKE,
  qkvBias: true,
  checkConfig: checkQwen2Config,
};

/**
 * Gemma (`model_type: "gemma"`, Transformers' `modeling_gemma.py`): the Llama layout with
 * - RMSNorm scaled by `1 + weight` (the stored norm weights are offsets around 0),
 * - embeddings multiplied by `sqrt(hidden_size)` before the first layer,
 * - GeGLU MLP `down(gelu_tanh(gate(x)) · up(x))` (`hidden_activation: "gelu_pytorch_tanh"`; a
 *   legacy `hidden_act: "gelu"` without `hidden_activation` means the same, as in Transformers),
 * - `head_dim` independent of `hidden_size / num_attention_heads` (256 in the released models),
 * - tied embeddings by default.
 * Gemma 2/3 (soft-capping, sliding windows, extra norms) are other model types and are not rows.
 * @module
 */
import type { ModelFamily } from "../families.ts";
import { LLAMA_LIKE } from "./llama_like.ts";

/** Activations written as tanh-approximated GELU in Transformers' ACT2FN. */
const TANH_GELU = ["gelu_pytorch_tanh", "gelu_new", "gelu_fast"];

/**
 * Gemma's MLP activation from its config: `hidden_activation`, else `hidden_act` (`"gelu"` there
 * meaning the tanh approximation, as Transformers' Gemma treats a missing `hidden_activation`);
 * refuses exact-erf GELU or anything else, naming the key.
 *
 * @example
 * ```ts
 * import { gemmaActivation } from "./gemma.ts";
 * if (gemmaActivation({ hidden_act: "gelu" }, "c") !== "gelu_tanh") throw new Error("legacy gelu");
 * let msg = "";
 * try { gemmaActivation({ hidden_activation: "gelu" }, "c"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes('hidden_activation "gelu"')) throw new Error(msg);
 * ```
 */
export function gemmaActivation(raw: Record<string, unknown>, source: string): "gelu_tanh" {
  const [key, act] = raw.hidden_activation != null ? ["hidden_activation", raw.hidden_activation] : [
    "hidden_act",
    raw.hidden_act === "gelu" || raw.hidden_act == null ? "gelu_pytorch_tanh" : raw.hidden_act,
  ];
  if (typeof act === "string" && TANH_GELU.includes(act)) return "gelu_tanh";
  throw new RangeError(
    `${source}: Gemma ${key} "${act}" is not implemented (only tanh-approximated GELU: ${
      TANH_GELU.join(", ")
    })`,
  );
}

/** Refuses Gemma config keys that change the math and are not implemented. */
function checkGemmaConfig(raw: Record<string, unknown>, source: string): void {
  gemmaActivation(raw, source);
  const bad = ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "sliding_window"]
    .filter((k) => raw[k] != null);
  if (typeof raw.attention_dropout === "number" && raw.attention_dropout !== 0) bad.push("attention_dropout");
  if (bad.length) {
    throw new RangeError(
      `${source}: config key(s) ${bad.join(", ")} belong to Gemma 2/3 or change the math and are not ` +
        'implemented for model_type "gemma"',
    );
  }
}

/** The Gemma row of `MODEL_FAMILIES`. */
export const GEMMA_FAMILY: ModelFamily = {
  modelType: "gemma",
  aliases: [],
  doc: "Gemma (RMSNorm with 1 + weight, embeddings scaled by sqrt(hidden), GeGLU tanh-GELU, head_dim 256)",
  ...LLAMA_LIKE,
  tieWordEmbeddings: true,
  checkConfig: checkGemmaConfig,
  normUnitOffset: true,
  scaleEmbeddings: true,
  activation: gemmaActivation,
};

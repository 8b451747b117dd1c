/**
 * Llama 1/2/3.x and Mistral (`model_type: "llama"` / `"mistral"`): the config keys of
 * Transformers' `LlamaConfig` / `MistralConfig` that the shared parser (`lib/models/llama_config.ts`)
 * does not read and that would change training. `attention_dropout` drops attention
 * probabilities during training (`nn.functional.dropout(attn_weights, p=attention_dropout)` in
 * `LlamaAttention`); our attention has no dropout, so a non-zero value is refused rather than
 * silently trained without it. It does not act at inference, so setting it to 0.0 only changes
 * fine-tuning.
 * @module
 */

/**
 * Refuses a Llama / Mistral config whose `attention_dropout` is not 0, naming the file, the
 * field and the fix.
 *
 * @example
 * ```ts
 * import { checkLlamaConfig } from "./llama.ts";
 * checkLlamaConfig({ attention_dropout: 0.0 }, "m/config.json");
 * checkLlamaConfig({}, "m/config.json");
 * let msg = "";
 * try { checkLlamaConfig({ attention_dropout: 0.1 }, "m/config.json"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.startsWith("m/config.json: attention_dropout: 0.1")) throw new Error(msg);
 * ```
 */
export function checkLlamaConfig(raw: Record<string, unknown>, source: string): void {
  const p = raw.attention_dropout;
  if (p == null || p === 0) return;
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
    throw new RangeError(`${source}: attention_dropout must be a number in [0, 1], got ${JSON.stringify(p)}`);
  }
  throw new RangeError(
    `${source}: attention_dropout: ${p} is not implemented (nbtune's attention has no dropout, so training ` +
      "would silently differ from the configured model); set attention_dropout to 0.0 in that file to " +
      "fine-tune without attention dropout (inference is unaffected), or use LoRA's own dropout " +
      "(attachLoRA({ dropout }))",
  );
}

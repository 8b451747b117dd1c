/**
 * The random streams adapter layers keep for dropout (`dropoutSeed`, advanced on every
 * training forward), read and set by name so that a pass can be repeated with the same
 * masks (the layer-wise divergence pre-pass) and a resumed run continues the same
 * streams as an uninterrupted one.
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";

/** Dropout stream position per linear layer name (only layers that have one). */
export type LayerRngState = Record<string, number>;

/**
 * Reads every layer's dropout stream position.
 *
 * @example
 * ```ts
 * import { initEngine } from "../engine/backend.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { attachLoRA } from "../adapters/attach.ts";
 * import { restoreLayerRng, snapshotLayerRng } from "./layer_rng.ts";
 * await initEngine({ backend: "cpu" });
 * const m = attachLoRA(initModel({ model_type: "llama", vocab_size: 8, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }), { r: 2, dropout: 0.1, targetModules: ["q_proj"] });
 * const s = snapshotLayerRng(m);
 * if (Object.keys(s).join() !== "model.layers.0.self_attn.q_proj") throw new Error(Object.keys(s).join());
 * restoreLayerRng(m, s);
 * m.dispose();
 * ```
 */
export function snapshotLayerRng(model: LlamaForCausalLM): LayerRngState {
  const out: LayerRngState = {};
  for (const l of model.linears()) {
    const seed = (l as unknown as { dropoutSeed?: unknown }).dropoutSeed;
    if (typeof seed === "number") out[l.name] = seed;
  }
  return out;
}

/** Sets the dropout stream positions read by {@linkcode snapshotLayerRng}. */
export function restoreLayerRng(model: LlamaForCausalLM, state: LayerRngState): void {
  const byName = new Map(model.linears().map((l) => [l.name, l as unknown as { dropoutSeed?: unknown }]));
  for (const [name, seed] of Object.entries(state)) {
    const l = byName.get(name);
    if (!l || typeof l.dropoutSeed !== "number") {
      throw new RangeError(
        `the saved dropout stream of "${name}" has no matching adapter layer in this model`,
      );
    }
    l.dropoutSeed = seed;
  }
}

/**
 * Merging adapters into the base weights (and back).
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import { BLOCK_LINEAR_NAMES, type BlockLinears } from "../models/llama_block.ts";
import { DenseLinear } from "../models/linear.ts";
import { isAdapterLayer } from "./adapter_layer.ts";
import { adapterLayers } from "./attach.ts";
import { boolean, defineOptions, type FieldsOf } from "../options/schema.ts";

/** Options for {@linkcode mergeAdapter}. */
export interface MergeOptions {
  /**
   * For 4-bit (or DyLoRA) layers, replace the layer by a dense fp32 copy of
   * `dequant(W) + ΔW` (the 4-bit weights cannot absorb the update losslessly).
   * @default {false}
   */
  dequantize?: boolean;
}

/** The schema of {@linkcode mergeAdapter}'s options. */
export const mergeSchema = defineOptions(
  "mergeAdapter",
  {
    dequantize: boolean(
      "For 4-bit (or DyLoRA) layers, replace the layer by a dense fp32 copy of dequant(W) + dW.",
      {
        default: false,
      },
    ),
  } satisfies FieldsOf<MergeOptions>,
);

/**
 * Folds every LoRA update into its dense base weight (`W ← W + scaling·BA`);
 * outputs are unchanged. Reversible with {@linkcode unmergeAdapter}.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { mergeAdapter, unmergeAdapter } from "./merge.ts";
 * import { attachLoRA } from "./attach.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * attachLoRA(m, { r: 2 });
 * for (const p of m.trainableParams()) p.variable.assign(tf.onesLike(p.variable));
 * const before = m.forward([[1, 2]]).dataSync();
 * mergeAdapter(m);
 * const merged = m.forward([[1, 2]]).dataSync();
 * if (Math.abs(merged[0] - before[0]) > 1e-4) throw new Error("merge changed the output");
 * unmergeAdapter(m);
 * m.dispose();
 * ```
 */
export function mergeAdapter(model: LlamaForCausalLM, options: MergeOptions = {}): void {
  const { dequantize } = mergeSchema.parse(options);
  const layers = adapterLayers(model);
  if (layers.length === 0) throw new Error("mergeAdapter: the model has no adapter");
  for (const block of model.layers) {
    for (const n of BLOCK_LINEAR_NAMES) {
      const lin = block.linears[n];
      if (!isAdapterLayer(lin)) continue;
      const dense = lin.base instanceof DenseLinear;
      if (lin.mergeable) {
        lin.merge();
      } else if (dequantize) {
        // Dequantized copy: the layer becomes a plain fp32 DenseLinear, frozen like the base.
        const merged = new DenseLinear(lin.name, lin.denseWeight(), { trainable: false });
        lin.dispose();
        (block.linears as BlockLinears)[n] = merged;
      } else {
        throw new TypeError(
          `${lin.name}: the base is ${dense ? `dense with a ${lin.kind} adapter` : "quantized"}; ` +
            "merging it needs mergeAdapter(model, { dequantize: true }), which replaces it by a dense fp32 copy",
        );
      }
    }
  }
}

/** Restores the base weights saved by {@linkcode mergeAdapter} (exact, bit for bit). */
export function unmergeAdapter(model: LlamaForCausalLM): void {
  for (const l of adapterLayers(model)) l.unmerge();
}

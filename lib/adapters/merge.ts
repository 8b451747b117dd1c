/**
 * Merging adapters into the base weights (and back).
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import { BLOCK_LINEAR_NAMES, type BlockLinears } from "../models/llama_block.ts";
import { DenseLinear } from "../models/linear.ts";
import { adapterLayers } from "./attach.ts";
import { DyLoRALinear } from "./dylora.ts";
import { LoRALinear } from "./lora.ts";

/** Options for {@linkcode mergeAdapter}. */
export interface MergeOptions {
  /**
   * For 4-bit (or DyLoRA) layers, replace the layer by a dense fp32 copy of
   * `dequant(W) + ΔW` (the 4-bit weights cannot absorb the update losslessly).
   * @default {false}
   */
  dequantize?: boolean;
}

/**
 * Folds every LoRA update into its dense base weight (`W ← W + scaling·BA`);
 * outputs are unchanged. Reversible with {@linkcode unmergeAdapter}.
 */
export function mergeAdapter(model: LlamaForCausalLM, options: MergeOptions = {}): void {
  const layers = adapterLayers(model);
  if (layers.length === 0) throw new Error("mergeAdapter: the model has no adapter");
  for (const block of model.layers) {
    for (const n of BLOCK_LINEAR_NAMES) {
      const lin = block.linears[n];
      if (!(lin instanceof LoRALinear || lin instanceof DyLoRALinear)) continue;
      const dense = lin.base instanceof DenseLinear;
      if (lin instanceof LoRALinear && dense) {
        lin.merge();
      } else if (options.dequantize) {
        // Dequantized copy: the layer becomes a plain fp32 DenseLinear, frozen like the base.
        const merged = new DenseLinear(lin.name, lin.denseWeight(), { trainable: false });
        lin.dispose();
        (block.linears as BlockLinears)[n] = merged;
      } else {
        throw new TypeError(
          `${lin.name}: the base is ${dense ? "dense with a DyLoRA adapter" : "quantized"}; ` +
            "merging it needs mergeAdapter(model, { dequantize: true }), which replaces it by a dense fp32 copy",
        );
      }
    }
  }
}

/** Restores the base weights saved by {@linkcode mergeAdapter} (exact, bit for bit). */
export function unmergeAdapter(model: LlamaForCausalLM): void {
  for (const l of adapterLayers(model)) if (l instanceof LoRALinear) l.unmerge();
}

/**
 * The interface every adapter layer implements (LoRA, DyLoRA, DoRA, …): a {@linkcode Linear}
 * wrapping a frozen base, with what attaching, merging, saving in PEFT's format and the
 * trainer's per-step hook need. Code that handles adapters asks the layer
 * ({@linkcode isAdapterLayer}, `layer.kind`) instead of testing classes, so a new kind is
 * one file plus one row in `registry.ts`.
 *
 * Dimension legend: I in features, O out features, R rank.
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Linear } from "../models/linear.ts";

/** One tensor of a PEFT adapter file, named by its suffix after the module path. */
export interface PeftTensor {
  /** Key suffix, e.g. `lora_A.weight` or `lora_magnitude_vector`. */
  suffix: string;
  shape: number[];
  data: Float32Array;
}

/** The `adapter_config.json` fields a layer determines. */
export interface PeftLayerConfig {
  /** `r`. */
  r: number;
  /** `lora_alpha`. */
  alpha: number;
  /** `use_rslora`. */
  rslora: boolean;
  /** `lora_dropout`. */
  dropout: number;
  /** `use_dora`. */
  useDora: boolean;
}

/** A linear layer carrying an adapter over a frozen base. */
export interface AdapterLayer extends Linear {
  /** The kind's key in `ADAPTER_KINDS` ("lora", "dylora", "dora"). */
  readonly kind: string;
  /** The wrapped (frozen) layer. */
  readonly base: Linear;
  /** Down projection `A: [R, I]`. */
  readonly loraA: tf.Variable<tf.Rank.R2>;
  /** Up projection `B: [O, R]`. */
  readonly loraB: tf.Variable<tf.Rank.R2>;
  /** Training mode (dropout, sampled ranks). */
  training: boolean;
  /** True while the update is folded into the base weight. */
  readonly merged: boolean;
  /** Whether {@linkcode AdapterLayer.merge} can fold the update in place (a dense base, a mergeable kind). */
  readonly mergeable: boolean;
  /** Folds the update into the dense base weight, reversibly. Throws when not `mergeable`. */
  merge(): void;
  /** Restores the base weight saved by `merge()` (no-op when not merged). */
  unmerge(): void;
  /** Called by the trainer at the start of every optimizer step (DyLoRA samples its rank here). */
  beginStep?(step: number): void;
  /**
   * The tensors and config fields PEFT stores for this layer; `rank` only for kinds
   * that can be exported at a smaller rank (DyLoRA).
   */
  exportPeft(rank?: number): { config: PeftLayerConfig; tensors: PeftTensor[] };
  /** Sets the adapter's tensors from a PEFT file (`suffix` → values, shapes already checked). */
  importPeft(tensors: ReadonlyMap<string, Float32Array>): void;
  /** Frees the adapter's own tensors (not the base layer). */
  disposeAdapter(): void;
}

/**
 * Whether a linear layer carries an adapter.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { DenseLinear } from "../models/linear.ts";
 * import { LoRALinear } from "./lora.ts";
 * import { isAdapterLayer } from "./adapter_layer.ts";
 * await initEngine({ backend: "cpu" });
 * const base = new DenseLinear("p", tf.zeros([2, 3]) as tf.Tensor2D, { trainable: false });
 * if (isAdapterLayer(base)) throw new Error("a dense layer is no adapter");
 * const lora = new LoRALinear(base, { r: 1, alpha: 1 });
 * if (!isAdapterLayer(lora) || lora.kind !== "lora") throw new Error("LoRA is an adapter");
 * lora.dispose();
 * ```
 */
export function isAdapterLayer(layer: Linear): layer is AdapterLayer {
  const l = layer as Partial<AdapterLayer>;
  return typeof l.kind === "string" && typeof l.disposeAdapter === "function" &&
    typeof l.exportPeft === "function" && l.base !== undefined;
}

/**
 * The adapter kinds nbtune knows, one row each: how a layer is built, what it trains
 * (the planner and the engine estimate count parameters from here) and how PEFT stores
 * it. Adding a kind is its layer file (implementing `AdapterLayer`) plus one row here.
 *
 * Dimension legend: I in features, O out features, R rank.
 * @module
 */
import type { Linear } from "../models/linear.ts";
import type { AdapterLayer } from "./adapter_layer.ts";
import { DoRALinear } from "./dora.ts";
import { DyLoRALinear, type DyLoRAMode } from "./dylora.ts";
import { LoRALinear } from "./lora.ts";

/** Layer options every kind understands (each kind reads what it needs). */
export interface AdapterLayerOptions {
  /** Rank (maximum rank for DyLoRA). */
  r: number;
  alpha: number;
  dropout: number;
  rslora: boolean;
  seed: number;
  /** DyLoRA only. */
  mode?: DyLoRAMode;
  /** DyLoRA only: each step's training rank. */
  rankSampler?: (step: number) => number;
}

/** One adapter kind. */
export interface AdapterKind {
  /** Key, also `AdapterLayer.kind` and `model.adapter.type`. */
  readonly name: string;
  /** One line for docs and tables. */
  readonly doc: string;
  /** Trainable parameters of one adapted `[O, I]` linear at rank `r` (maximum rank for DyLoRA). */
  params(inFeatures: number, outFeatures: number, r: number): number;
  /** The tensors PEFT stores per module at rank `r`: key suffix → shape. */
  peftShapes(inFeatures: number, outFeatures: number, r: number): Record<string, number[]>;
  /** `use_dora` in `adapter_config.json`. */
  readonly useDora: boolean;
  /**
   * Whether each training step samples a different sub-model (DyLoRA's rank): step losses then vary by
   * design, so the trainer's loss-spike guard is off unless `divergence.lossSpikeFactor` is set.
   */
  readonly variesPerStep: boolean;
  /** Builds the layer over `base`. */
  create(base: Linear, options: AdapterLayerOptions): AdapterLayer;
}

const loraShapes = (I: number, O: number, r: number): Record<string, number[]> => ({
  "lora_A.weight": [r, I],
  "lora_B.weight": [O, r],
});

/** An adapter kind's name. */
export type AdapterKindName = "lora" | "dylora" | "dora";

/** Every adapter kind by name. */
export const ADAPTER_KINDS: Readonly<Record<AdapterKindName, AdapterKind>> = {
  lora: {
    name: "lora",
    doc: "LoRA: y = base(x) + (alpha/r)·x Aᵀ Bᵀ (Hu et al. 2021); on a 4-bit base, QLoRA",
    params: (I, O, r) => r * (I + O),
    peftShapes: loraShapes,
    useDora: false,
    variesPerStep: false,
    create: (base, o) => new LoRALinear(base, o),
  },
  dylora: {
    name: "dylora",
    doc: "DyLoRA: one adapter trained for every rank 1..r (Valipour et al. 2023); saved as LoRA at one rank",
    params: (I, O, r) => r * (I + O),
    peftShapes: loraShapes,
    useDora: false,
    variesPerStep: true,
    create: (base, o) => new DyLoRALinear(base, { ...o, maxRank: o.r }),
  },
  dora: {
    name: "dora",
    doc: "DoRA: LoRA direction with a trained magnitude per output row (Liu et al. 2024, PEFT use_dora)",
    params: (I, O, r) => r * (I + O) + O,
    peftShapes: (I, O, r) => ({ ...loraShapes(I, O, r), "lora_magnitude_vector": [O] }),
    useDora: true,
    variesPerStep: false,
    create: (base, o) => new DoRALinear(base, o),
  },
};

/**
 * The kind called `name`, or a RangeError listing the known ones.
 *
 * @example
 * ```ts
 * import { adapterKind } from "./registry.ts";
 * // DoRA trains LoRA's factors plus one magnitude per output row
 * if (adapterKind("dora").params(16, 8, 2) !== 2 * (16 + 8) + 8) throw new Error("dora params");
 * ```
 */
export function adapterKind(name: string): AdapterKind {
  const k = (ADAPTER_KINDS as Record<string, AdapterKind>)[name];
  if (!k) {
    throw new RangeError(`unknown adapter kind "${name}" (known: ${Object.keys(ADAPTER_KINDS).join(", ")})`);
  }
  return k;
}

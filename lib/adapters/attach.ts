/**
 * Attaching LoRA / DyLoRA adapters to a model's linear layers, choosing targets
 * like PEFT, and serving a DyLoRA adapter at any rank.
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import { BLOCK_LINEAR_NAMES, type BlockLinears } from "../models/llama_block.ts";
import type { Linear } from "../models/linear.ts";
import { mulberry32 } from "../engine/random.ts";
import { type AdapterLayer, isAdapterLayer } from "./adapter_layer.ts";
import type { DyLoRALinear, DyLoRAMode } from "./dylora.ts";
import { adapterKind, type AdapterKindName, type AdapterLayerOptions } from "./registry.ts";
import { boolean, defineOptions, type FieldsOf, integer, number, oneOf } from "../options/schema.ts";
import { targetModulesField } from "../options/target_modules.ts";
import { expandFusedTargets } from "../models/fused_linears.ts";

/** Which linear layers get adapters: names (`"q_proj"`), a RegExp on the full path, or `"all-linear"`. */
export type TargetModules = string[] | RegExp | "all-linear";

/** Options for {@linkcode attachLoRA}. */
export interface LoRAConfig {
  /** Rank. @default {8} */
  r?: number;
  /** Scaling numerator (`scaling = alpha / r`). @default {16} */
  alpha?: number;
  /** Dropout on the adapter input while training. @default {0} */
  dropout?: number;
  /** Target layers. @default {"all-linear"} (the one default, shared with recipes and the planner) */
  targetModules?: TargetModules;
  /** rsLoRA scaling `alpha / √r`. @default {false} */
  rslora?: boolean;
  /** Seed of A's initialisation. @default {0} */
  seed?: number;
  /** DoRA (PEFT's `use_dora`): add a trainable magnitude per output row (see `DoRALinear`). @default {false} */
  useDora?: boolean;
}

/** Options for {@linkcode attachDyLoRA}. */
export interface DyLoRAConfig {
  /** Largest rank R (`r`, as every rank); every rank 1..R is trained. @default {8} */
  r?: number;
  /** Scaling numerator (`scaling = alpha / b` at rank b). @default {16} */
  alpha?: number;
  /** Dropout on the adapter input while training. @default {0} */
  dropout?: number;
  /** Target layers. @default {"all-linear"} */
  targetModules?: TargetModules;
  /** `"prefix"` trains all components ≤ b, `"last"` only the b-th. @default {"prefix"} */
  mode?: DyLoRAMode;
  /** Seed of initialisation and of the per-step rank sampler. @default {0} */
  seed?: number;
}

/** What is attached to a model (kept on `model.adapter`). */
export interface AdapterInfo {
  type: AdapterKindName;
  /** Module paths with adapters. */
  modules: string[];
  config:
    | Required<Omit<LoRAConfig, "targetModules">> & { targetModules: string[] }
    | Required<Omit<DyLoRAConfig, "targetModules">> & { targetModules: string[] };
}

/** PEFT's and older nbtune names of adapter options, and the names to use. */
const ADAPTER_RENAMED = {
  rank: "r",
  maxRank: "r",
  loraRank: "r",
  lora_alpha: "alpha",
  lora_dropout: "dropout",
  target_modules: "targetModules",
  loraTargets: "targetModules",
};

const sharedFields = {
  alpha: number("Scaling numerator (scaling = alpha / r).", { above: 0, default: 16 }),
  dropout: number("Dropout on the adapter input while training.", { min: 0, below: 1, default: 0 }),
  targetModules: targetModulesField({ regexp: true }),
  seed: integer("Seed of the initialisation (and of DyLoRA's rank sampler).", { min: 0, default: 0 }),
};

/** The schema of {@linkcode attachLoRA}'s options. */
export const loraSchema = defineOptions(
  "attachLoRA",
  {
    r: integer("Rank.", { min: 1, default: 8 }),
    ...sharedFields,
    rslora: boolean("rsLoRA scaling alpha / sqrt(r).", { default: false }),
    useDora: boolean("DoRA (PEFT's use_dora): a trainable magnitude per output row.", { default: false }),
  } satisfies FieldsOf<LoRAConfig>,
  { renamed: { ...ADAPTER_RENAMED, use_dora: "useDora", use_rslora: "rslora" } },
);

/** The schema of {@linkcode attachDyLoRA}'s options. */
export const dyloraSchema = defineOptions(
  "attachDyLoRA",
  {
    r: integer("Largest rank R; every rank 1..R is trained.", { min: 1, default: 8 }),
    ...sharedFields,
    mode: oneOf('"prefix" trains all components <= b, "last" only the b-th.', ["prefix", "last"] as const, {
      default: "prefix",
    }),
  } satisfies FieldsOf<DyLoRAConfig>,
  { renamed: ADAPTER_RENAMED },
);

/**
 * The block linear names matched by `targets` (PEFT semantics: a list entry matches
 * the last path component; a RegExp must match the whole module path).
 */
export function resolveTargets(model: LlamaForCausalLM, targets: TargetModules): string[] {
  const paths = model.layers.flatMap((l) => BLOCK_LINEAR_NAMES.map((n) => l.linears[n].name));
  if (targets === "all-linear") return paths;
  if (targets instanceof RegExp) {
    const re = new RegExp(`^(?:${targets.source})$`, targets.flags);
    const hit = paths.filter((p) => re.test(p));
    if (hit.length === 0) {
      throw new RangeError(`targetModules ${targets} matches no linear layer (e.g. ${paths[0]})`);
    }
    return hit;
  }
  if (!Array.isArray(targets) || targets.length === 0) {
    throw new TypeError('targetModules must be a non-empty list of names, a RegExp or "all-linear"');
  }
  // PEFT names of fused checkpoints (Phi-3 qkv_proj, gate_up_proj) stand for their parts.
  targets = expandFusedTargets(targets, model.config);
  for (const t of targets) {
    if (!paths.some((p) => p === t || p.endsWith(`.${t}`))) {
      throw new RangeError(`unknown target module "${t}" (known: ${BLOCK_LINEAR_NAMES.join(", ")})`);
    }
  }
  return paths.filter((p) => targets.some((t) => p === t || p.endsWith(`.${t}`)));
}

/**
 * Wraps the linears at `paths` with adapters of kind `type` (a key of `ADAPTER_KINDS`)
 * and freezes the base. Every wrapper is built before the model is touched; if one
 * constructor throws (bad rank, alpha, dropout…), the tensors made so far are freed and
 * the model is left as it was. Layer `i` gets seed `options.seed · 1000 + i`.
 */
export function attachAdapters(
  model: LlamaForCausalLM,
  paths: string[],
  type: AdapterKindName,
  options: AdapterLayerOptions,
  config: object,
): AdapterLayer[] {
  const kind = adapterKind(type);
  const make = (base: Linear, i: number) => kind.create(base, { ...options, seed: options.seed * 1000 + i });
  const set = new Set(paths);
  const slots: { linears: BlockLinears; name: (typeof BLOCK_LINEAR_NAMES)[number] }[] = [];
  for (const layer of model.layers) {
    for (const n of BLOCK_LINEAR_NAMES) {
      if (set.has(layer.linears[n].name)) slots.push({ linears: layer.linears, name: n });
    }
  }
  const made: AdapterLayer[] = [];
  try {
    slots.forEach((slot, i) => made.push(make(slot.linears[slot.name], i)));
  } catch (e) {
    for (const m of made) m.disposeAdapter();
    throw e;
  }
  model.setBaseTrainable(false);
  slots.forEach((slot, i) => (slot.linears[slot.name] = made[i]));
  const targetModules = [...new Set(paths.map((p) => p.split(".").at(-1)!))];
  model.adapter = { type, modules: paths, config: { ...config, targetModules } };
  return made;
}

function ensureNoAdapter(model: LlamaForCausalLM): void {
  if (model.adapter) {
    throw new Error(`the model already has a ${model.adapter.type} adapter; call detachAdapter(model) first`);
  }
}

/**
 * Freezes the base model and wraps the target layers with LoRA adapters
 * (works on dense and 4-bit bases: that is QLoRA).
 *
 * @example
 * ```ts
 * import { attachLoRA } from "./attach.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * attachLoRA(m, { r: 2, alpha: 4, targetModules: ["q_proj", "v_proj"] });
 * // A [2, 8] + B [8, 2] for q; A [2, 8] + B [4, 2] for v
 * if (m.trainableParams().length !== 4) throw new Error("expected 4 adapter tensors");
 * m.dispose();
 * ```
 */
export function attachLoRA(model: LlamaForCausalLM, config: LoRAConfig = {}): LlamaForCausalLM {
  const { targetModules, ...c } = loraSchema.parse(config);
  ensureNoAdapter(model);
  const paths = resolveTargets(model, targetModules as TargetModules);
  const { useDora: _, ...layerOptions } = c;
  attachAdapters(model, paths, c.useDora ? "dora" : "lora", layerOptions, c);
  return model;
}

/**
 * Freezes the base and attaches DyLoRA adapters; each training step samples one
 * rank b ∈ [1, r] (seeded) shared by all layers. On a 4-bit base this is QDyLoRA.
 */
export function attachDyLoRA(model: LlamaForCausalLM, config: DyLoRAConfig = {}): LlamaForCausalLM {
  const { targetModules, ...c } = dyloraSchema.parse(config);
  ensureNoAdapter(model);
  const paths = resolveTargets(model, targetModules as TargetModules);
  // One rank per optimizer step, shared by every layer: the first layer asked for a new
  // step draws it, the others reuse it.
  const rand = mulberry32(c.seed + 12345);
  let drawnFor: number | undefined, rank = c.r;
  const rankSampler = (step: number) => {
    if (step !== drawnFor) {
      drawnFor = step;
      rank = 1 + Math.floor(rand() * c.r);
    }
    return rank;
  };
  attachAdapters(model, paths, "dylora", { ...c, rslora: false, rankSampler }, c);
  return model;
}

/** The adapter layers of a model (any kind), in module order. */
export function adapterLayers(model: LlamaForCausalLM): AdapterLayer[] {
  return model.linears().filter(isAdapterLayer);
}

/**
 * Serves a DyLoRA model at rank `b` (1..r) for inference and eval.
 *
 * @example
 * ```ts
 * import { attachDyLoRA, setRank } from "./attach.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * attachDyLoRA(m, { r: 4 });
 * setRank(m, 2); // serve rank 2 of the one trained adapter
 * m.dispose();
 * ```
 */
export function setRank(model: LlamaForCausalLM, b: number): void {
  const layers = adapterLayers(model).filter((l) => l.kind === "dylora") as DyLoRALinear[];
  if (layers.length === 0) throw new Error("setRank: the model has no DyLoRA adapter (use attachDyLoRA)");
  const max = layers[0].maxRank;
  if (!Number.isInteger(b) || b < 1 || b > max) {
    throw new RangeError(`setRank: rank ${b} is outside 1..${max}`);
  }
  for (const l of layers) l.evalRank = b;
}

/** Removes the adapters (disposing them) and unfreezes nothing: the base stays as it is. */
export function detachAdapter(model: LlamaForCausalLM): void {
  for (const layer of model.layers) {
    for (const n of BLOCK_LINEAR_NAMES) {
      const lin = layer.linears[n];
      if (isAdapterLayer(lin)) {
        lin.unmerge();
        lin.disposeAdapter();
        (layer.linears as BlockLinears)[n] = lin.base;
      }
    }
  }
  delete model.adapter;
}

/**
 * PEFT's `print_trainable_parameters` line:
 * `trainable params: N || all params: M || trainable%: P`.
 */
export function trainableParametersLine(model: LlamaForCausalLM): string {
  const trainable = model.trainableParams().reduce((s, p) => s + p.variable.size, 0);
  const all = model.numParams();
  return `trainable params: ${trainable.toLocaleString("en-US")} || all params: ${
    all.toLocaleString("en-US")
  } || trainable%: ${(100 * trainable / all).toFixed(4)}`;
}

/**
 * Saving and loading adapters in PEFT's format (`adapter_config.json` +
 * `adapter_model.safetensors`, keys `base_model.model.<module>.lora_A.weight`
 * `[r, in]` and `…lora_B.weight` `[out, r]`), so adapters move between this
 * toolkit and Python PEFT. DoRA adapters (`use_dora: true`) add
 * `base_model.model.<module>.lora_magnitude_vector` `[out]`, the key PEFT's
 * `get_peft_model_state_dict` writes. DyLoRA has no PEFT type: a DyLoRA adapter is saved as
 * a plain LoRA at its current serving rank (see {@linkcode exportRank}).
 * @module
 */
import { openSafetensors } from "../io/safetensors_reader.ts";
import { checkWeightDtype } from "../io/weight_dtype_check.ts";
import { writeSafetensors } from "../io/safetensors_writer.ts";
import { recoverInterruptedSave, refuseInterruptedSave, writeDirAtomic } from "../io/atomic_dir.ts";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { PeftLayerConfig, PeftTensor } from "./adapter_layer.ts";
import { adapterLayers, attachLoRA, detachAdapter } from "./attach.ts";
import { adapterKind } from "./registry.ts";
import { defineOptions, type FieldsOf, integer, string } from "../options/schema.ts";
import { fusedModuleShape, fusePeftRows, splitPeftTensors } from "../models/fused_linears.ts";

/** PEFT key of a module's factor. */
export function peftKey(module: string, factor: "A" | "B"): string {
  return `base_model.model.${module}.lora_${factor}.weight`;
}

/** PEFT key of a DoRA module's magnitude vector `[out]` (no `.weight` suffix, as PEFT saves it). */
export function peftMagnitudeKey(module: string): string {
  return `base_model.model.${module}.lora_magnitude_vector`;
}

const PREFIX = "base_model.model.";

interface Exported {
  module: string;
  tensors: PeftTensor[];
}

function exportFactors(
  model: LlamaForCausalLM,
  rank?: number,
): { rows: Exported[]; config: PeftLayerConfig } {
  const layers = adapterLayers(model);
  if (layers.length === 0) {
    throw new Error("the model has no adapter to save (attachLoRA / attachDyLoRA first)");
  }
  let config: PeftLayerConfig | undefined;
  const rows = layers.map((l) => {
    const e = l.exportPeft(rank);
    config = e.config;
    return { module: l.name, tensors: e.tensors };
  });
  return { rows, config: config! };
}

/** Options for {@linkcode saveAdapter}. */
export interface SaveAdapterOptions {
  /** `base_model_name_or_path` written to the config. @default {the model's `_name_or_path` or ""} */
  baseModelNameOrPath?: string;
  /** For DyLoRA: the rank `r` to export. @default {the serving rank set by `setRank`, else the largest} */
  r?: number;
}

/** The schema of {@linkcode saveAdapter}'s options. */
export const saveAdapterSchema = defineOptions(
  "saveAdapter",
  {
    baseModelNameOrPath: string(
      "base_model_name_or_path written to the config (default: the model's _name_or_path).",
    ),
    r: integer("For DyLoRA: the rank to export (default: the serving rank, else the largest).", { min: 1 }),
  } satisfies FieldsOf<SaveAdapterOptions>,
  { renamed: { rank: "r", base_model_name_or_path: "baseModelNameOrPath" } },
);

/** Files a PEFT adapter save consists of (everything else in the folder is carried over). */
const ADAPTER_FILES = new Set(["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]);

/**
 * Writes `adapter_config.json` and `adapter_model.safetensors` (F32) into `dir`
 * atomically: the folder is written under a temporary name next to `dir`, fsynced and
 * renamed into place (see `writeDirAtomic`), so a kill at any moment leaves the previous
 * adapter or the new one, never a mix. Other files already in `dir` (a tokenizer, a
 * history) are kept. Non-finite factors are refused with the tensor's name.
 */
export async function saveAdapter(
  model: LlamaForCausalLM,
  dir: string,
  options: SaveAdapterOptions = {},
): Promise<void> {
  await writeDirAtomic(dir, (tmp) => writeAdapterFiles(model, tmp, options), {
    carry: (name) => !ADAPTER_FILES.has(name),
  });
}

/** Throws a RangeError naming the first tensor of `rows` holding NaN or ±Infinity. */
function refuseNonFinite(rows: Exported[]): void {
  for (const row of rows) {
    for (const { suffix, data } of row.tensors) {
      const key = `${PREFIX}${row.module}.${suffix}`;
      const bad = data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        throw new RangeError(
          `saveAdapter: "${key}" holds ${data[bad]} at element ${bad}; the run diverged ` +
            "(lower the learning rate and resume from an earlier save). Nothing was written.",
        );
      }
    }
  }
}

/**
 * Writes the adapter's files into an existing folder, non-atomically: for composite saves
 * (training states) that wrap it in their own `writeDirAtomic`. Refuses non-finite factors.
 */
export async function writeAdapterFiles(
  model: LlamaForCausalLM,
  dir: string,
  options: SaveAdapterOptions = {},
): Promise<void> {
  const o = saveAdapterSchema.parse(options);
  const exported = exportFactors(model, o.r);
  const { rslora, dropout, useDora } = exported.config;
  // Fused checkpoints (Phi-3): the parts' factors are written under the fused module names.
  const fused = fusePeftRows(exported.rows, model.config, exported.config.r, rslora);
  const rows = fused.rows;
  const r = exported.config.r * fused.rankFactor;
  const alpha = exported.config.alpha * fused.alphaFactor;
  refuseNonFinite(rows);
  await Deno.mkdir(dir, { recursive: true });
  const entries = rows.flatMap((row) =>
    row.tensors.map((t) => ({
      name: `${PREFIX}${row.module}.${t.suffix}`,
      dtype: "F32" as const,
      shape: t.shape,
      data: t.data,
    }))
  ).sort((x, y) => x.name < y.name ? -1 : 1);
  await writeSafetensors(`${dir}/adapter_model.safetensors`, entries, { metadata: { format: "pt" } });
  const targets = [...new Set(rows.map((x) => x.module.split(".").at(-1)!))].sort();
  // The key set PEFT 0.19.1 writes (sorted, like its json.dumps(sort_keys=True)).
  const config = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: o.baseModelNameOrPath ??
      String(model.config.raw._name_or_path ?? model.config.sourceDir ?? ""),
    bias: "none",
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: alpha,
    lora_bias: false,
    lora_dropout: dropout,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    peft_version: "0.19.1",
    qalora_group_size: 16,
    r,
    rank_pattern: {},
    revision: null,
    target_modules: targets,
    target_parameters: null,
    task_type: "CAUSAL_LM",
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: useDora,
    use_qalora: false,
    use_rslora: rslora,
  };
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify(config, null, 2) + "\n");
}

/** Writes a DyLoRA adapter truncated to rank `b` as a plain PEFT LoRA adapter. */
export async function exportRank(model: LlamaForCausalLM, b: number, dir: string): Promise<void> {
  const layers = adapterLayers(model);
  if (!layers.some((l) => l.kind === "dylora")) {
    throw new Error("exportRank: the model has no DyLoRA adapter");
  }
  await saveAdapter(model, dir, { r: b });
}

/**
 * Reads a PEFT LoRA adapter from `dir` and attaches it to `model`. Everything is
 * validated (config, key names, shapes, finite values) before the model is
 * touched, so a failed load leaves the base model unchanged.
 */
export async function loadAdapter(model: LlamaForCausalLM, dir: string): Promise<LlamaForCausalLM> {
  refuseInterruptedSave(dir, "loadAdapter");
  await recoverInterruptedSave(dir);
  const cfgPath = `${dir}/adapter_config.json`;
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await Deno.readTextFile(cfgPath));
  } catch (e) {
    throw new Error(`Cannot read ${cfgPath}: ${(e as Error).message}`);
  }
  if (cfg.peft_type !== "LORA") {
    throw new RangeError(`${cfgPath}: peft_type "${cfg.peft_type}" is not supported (only LORA)`);
  }
  if (cfg.fan_in_fan_out === true) {
    throw new RangeError(`${cfgPath}: fan_in_fan_out adapters (GPT-2 Conv1D) do not apply to Llama`);
  }
  const useDora = cfg.use_dora === true;
  const kind = adapterKind(useDora ? "dora" : "lora");
  const r = (cfg.r as number) ?? 8, alpha = (cfg.lora_alpha as number) ?? 8;
  for (const [k, v] of Object.entries({ rank_pattern: cfg.rank_pattern, alpha_pattern: cfg.alpha_pattern })) {
    if (v && Object.keys(v as object).length) throw new RangeError(`${cfgPath}: ${k} is not supported yet`);
  }
  const path = `${dir}/adapter_model.safetensors`;
  try {
    await Deno.stat(path);
  } catch {
    throw new RangeError(
      `loadAdapter: ${dir} has adapter_config.json but no adapter_model.safetensors: an incomplete or ` +
        "half-copied save (adapter_model.bin is not read); save the adapter again or copy the whole folder",
    );
  }
  const file = await openSafetensors(path);
  // module → suffix → values, all read and checked before the model is touched
  const tensors = new Map<string, Map<string, Float32Array>>();
  try {
    const suffixes = Object.keys(kind.peftShapes(1, 1, 1));
    const keyOf = new Map<string, string>(); // "module\0suffix" → stored key
    for (const name of file.names()) {
      const suffix = suffixes.find((x) =>
        name.endsWith(`.${x}`) || name.endsWith(`.${x.replace(/\.weight$/, ".default.weight")}`)
      );
      const module = suffix && name.startsWith(PREFIX)
        ? name.slice(PREFIX.length, name.lastIndexOf(suffix.split(".")[0]) - 1)
        : undefined;
      if (!suffix || !module) {
        throw new RangeError(
          `${path}: tensor "${name}" is not part of a ${useDora ? "DoRA" : "LoRA"} adapter ` +
            `(expected ${PREFIX}<module>.{${suffixes.join(",")}}; use_dora is ${useDora})`,
        );
      }
      keyOf.set(`${module}\0${suffix}`, name);
      if (!tensors.has(module)) tensors.set(module, new Map());
    }
    if (tensors.size === 0) throw new RangeError(`${path}: holds no LoRA factors`);
    const linears = new Map<string, { inFeatures: number; outFeatures: number }>(
      model.linears().map((l) => [l.name, l]),
    );
    for (const [mod, values] of tensors) {
      const lin = linears.get(mod) ?? fusedModuleShape(model.config, mod);
      if (!lin) {
        throw new RangeError(`${path}: module "${mod}" does not exist in this model (another architecture?)`);
      }
      for (const [suffix, want] of Object.entries(kind.peftShapes(lin.inFeatures, lin.outFeatures, r))) {
        const key = keyOf.get(`${mod}\0${suffix}`);
        if (!key) throw new RangeError(`${path}: missing tensor "${PREFIX}${mod}.${suffix}"`);
        checkWeightDtype(key, file.info(key)); // factors are floats: I32 / I16 means a wrong header
        const got = file.info(key).shape;
        if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
          throw new TypeError(`${path}: "${key}" has shape [${got}], the model needs [${want}] (r=${r})`);
        }
        const data = await file.readFloat32(key);
        if (!data.every(Number.isFinite)) throw new RangeError(`${path}: "${key}" holds non-finite values`);
        values.set(suffix, data);
      }
    }
    // Fused modules (Phi-3 qkv_proj, gate_up_proj) become their parts, each with A and its rows of B.
    const byModule = splitPeftTensors(tensors, model.config, r, path);
    try {
      attachLoRA(model, {
        r,
        alpha,
        dropout: (cfg.lora_dropout as number) ?? 0,
        rslora: cfg.use_rslora === true,
        targetModules: [...byModule.keys()],
        useDora,
      });
    } catch (e) {
      // r, lora_alpha or lora_dropout of the config refused by attachLoRA's checks: name the file
      (e as Error).message = `${cfgPath}: ${(e as Error).message}`;
      throw e;
    }
    try {
      for (const l of adapterLayers(model)) {
        const values = byModule.get(l.name);
        if (!values) throw new RangeError(`${path}: no factors for targeted module "${l.name}"`);
        l.importPeft(values);
      }
    } catch (e) {
      detachAdapter(model);
      model.setBaseTrainable(true);
      throw e;
    }
  } finally {
    file.close();
  }
  return model;
}

/**
 * Saving a model in HF layout (`config.json` + `model.safetensors`).
 * @module
 */
import { fromFloat32 } from "../io/dtypes.ts";
import { writeSafetensors } from "../io/safetensors_writer.ts";
import { writeDirAtomic } from "../io/atomic_dir.ts";
import type { LlamaForCausalLM } from "./llama.ts";
import { BLOCK_LINEAR_NAMES } from "./llama_block.ts";
import { fuseStateDict } from "./fused_linears.ts";
import { defineOptions, type FieldsOf, oneOf, record, string } from "../options/schema.ts";

/** Options for {@linkcode saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /** Storage dtype of the weights. @default {"F32"} */
  dtype?: "F32" | "F16" | "BF16";
  /** Extra `__metadata__` entries. */
  metadata?: Record<string, string>;
}

/** The schema of {@linkcode saveCheckpoint}'s options. */
export const saveCheckpointSchema = defineOptions(
  "saveCheckpoint",
  {
    dtype: oneOf("Storage dtype of the weights.", ["F32", "F16", "BF16"] as const, { default: "F32" }),
    metadata: record("Extra __metadata__ entries.", string("A value.")),
  } satisfies FieldsOf<SaveCheckpointOptions>,
);

/** The model's weights as `[name, tensor-producing function]` in HF names (dense copies). */
export function stateDict(
  model: LlamaForCausalLM,
): { name: string; shape: number[]; read: () => Float32Array }[] {
  const out: { name: string; shape: number[]; read: () => Float32Array }[] = [];
  const dense = (
    name: string,
    get: () => { dataSync(): Float32Array | Int32Array | Uint8Array; dispose(): void; shape: number[] },
    shape: number[],
  ) =>
    out.push({
      name,
      shape,
      read: () => {
        const t = get();
        const d = Float32Array.from(t.dataSync() as Float32Array);
        t.dispose();
        return d;
      },
    });
  const c = model.config;
  dense("model.embed_tokens.weight", () => model.embedTokens.clone(), [c.vocabSize, c.hiddenSize]);
  for (const l of model.layers) {
    const p = `model.layers.${l.index}`;
    dense(`${p}.input_layernorm.weight`, () => l.inputNorm.weight.clone(), [c.hiddenSize]);
    for (const n of BLOCK_LINEAR_NAMES) {
      const lin = l.linears[n];
      dense(`${lin.name}.weight`, () => lin.denseWeight(), [lin.outFeatures, lin.inFeatures]);
      const bias = l.biases[n];
      if (bias) dense(`${bias.name}.bias`, () => bias.variable.clone(), [bias.size]);
    }
    dense(`${p}.post_attention_layernorm.weight`, () => l.postAttentionNorm.weight.clone(), [c.hiddenSize]);
  }
  dense("model.norm.weight", () => model.norm.weight.clone(), [c.hiddenSize]);
  if (model.lmHead) {
    const h = model.lmHead;
    dense("lm_head.weight", () => h.denseWeight(), [h.outFeatures, h.inFeatures]);
  }
  return fuseStateDict(out, model.config); // Phi-3: q/k/v → qkv_proj, gate/up → gate_up_proj
}

/** Files of a checkpoint save (everything else in the folder, e.g. a tokenizer, is carried over). */
const CHECKPOINT_FILE =
  /^(config\.json|model\.safetensors(\.index\.json)?|model-\d+-of-\d+\.safetensors|pytorch_model.*\.bin(\.index\.json)?)$/;

/**
 * Writes `config.json` and `model.safetensors` for `model` into `dir` atomically: the
 * folder is written under a temporary name next to `dir`, fsynced and renamed into place
 * (see `writeDirAtomic`), so a kill at any moment leaves the previous checkpoint or the
 * new one, never a mix. Other files already in `dir` (tokenizer, generation config) are
 * kept. A weight holding NaN or ±Infinity is refused with its name and nothing is written.
 */
export async function saveCheckpoint(
  model: LlamaForCausalLM,
  dir: string,
  options: SaveCheckpointOptions = {},
): Promise<void> {
  saveCheckpointSchema.parse(options);
  await writeDirAtomic(dir, (tmp) => writeCheckpointFiles(model, tmp, options), {
    carry: (name) => !CHECKPOINT_FILE.test(name),
  });
}

/**
 * The model's state dict as lazy safetensors entries in `dtype`, each refusing a non-finite value
 * (`message(name, value, index)` says what happened): shared by `saveCheckpoint` and `exportMerged`.
 */
export function finiteEntries(
  model: LlamaForCausalLM,
  dtype: "F32" | "F16" | "BF16",
  message: (name: string, value: number, index: number) => string,
): { name: string; dtype: "F32" | "F16" | "BF16"; shape: number[]; data: () => Uint8Array }[] {
  return stateDict(model).map((t) => ({
    name: t.name,
    dtype,
    shape: t.shape,
    data: () => {
      const values = t.read();
      const bad = values.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new RangeError(message(t.name, values[bad], bad));
      return fromFloat32(dtype, values);
    },
  }));
}

/**
 * Writes the checkpoint's files into an existing folder, non-atomically: for composite
 * saves (training states) that wrap it in their own `writeDirAtomic`. Refuses non-finite weights.
 */
export async function writeCheckpointFiles(
  model: LlamaForCausalLM,
  dir: string,
  options: SaveCheckpointOptions = {},
): Promise<void> {
  const dtype = saveCheckpointSchema.parse(options).dtype;
  await Deno.mkdir(dir, { recursive: true });
  const torchDtype = dtype === "F32" ? "float32" : dtype === "F16" ? "float16" : "bfloat16";
  const tensors = finiteEntries(
    model,
    dtype,
    (name, value, at) =>
      `saveCheckpoint: "${name}" holds ${value} at element ${at}; the run diverged ` +
      "(lower the learning rate and resume from an earlier save). Nothing was written.",
  );
  await writeSafetensors(`${dir}/model.safetensors`, tensors, {
    metadata: { format: "pt", ...options.metadata },
  });
  const config = { ...model.config.raw, torch_dtype: torchDtype };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
}

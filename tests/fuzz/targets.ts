/**
 * What the file-format fuzzer damages and how it loads the result: one {@linkcode FuzzTarget} per
 * format (sharded safetensors checkpoints, GGUF files, bitsandbytes 4-bit checkpoints, GPTQ directories, PEFT
 * adapters, saved training states, YAML recipes, JSON-lines data). Each target builds a small valid
 * template once; the harness copies it per case, damages one file and calls `load` on the copy.
 * @module
 */
import type { FileKind } from "./mutations.ts";
import { decodeSafetensors } from "../../lib/io/safetensors_reader.ts";
import { GGUF_DEQUANT_TYPES, openGguf } from "../../lib/io/gguf.ts";
import { openCheckpoint, writeShardedSafetensors } from "../../lib/io/checkpoint_files.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { loadAdapter, saveAdapter } from "../../lib/adapters/peft_format.ts";
import { train, type TrainOptions } from "../../lib/train/trainer.ts";
import { DivergenceError } from "../../lib/train/divergence.ts";
import { readRecipe } from "../../lib/train/recipe.ts";
import { readJsonl } from "../../lib/io/jsonl.ts";
import { tokenizeRecords } from "../../lib/train/data.ts";
import { createTokenizer, loadTokenizer, type Tokenizer } from "../../lib/io/tokenizer.ts";

import { FUZZ_FORMATS, type FuzzFormat } from "./formats.ts";
export { FUZZ_FORMATS, type FuzzFormat };

/** How a load that did not throw ended. */
export type LoadResult = "accepted" | "diverged";

/** One format: its template, the files damaged and the loader. */
export interface FuzzTarget {
  format: FuzzFormat;
  /** Writes the valid template into `dir` (created, empty). */
  setup(dir: string): Promise<void>;
  /** Template files that get damaged, with their kind (repeat a file to make it likelier). */
  files: readonly { path: string; kind: FileKind }[];
  /** Loads the damaged copy in `dir` as a user would; throws to refuse. */
  load(dir: string): Promise<LoadResult>;
  /** What a refusal must name: the damaged case's folder (default) or one file in it. */
  mustName?(dir: string): string;
  /** A pattern a refusal must match besides naming the file (e.g. `file:LINE` for data). */
  mustMatch?(dir: string): RegExp;
  /** Frees what setup kept in memory. */
  dispose?(): void;
}

/** Several independent loaders refused the same case; each error is classified. */
export class SeveralErrors extends Error {
  constructor(readonly errors: unknown[]) {
    super(errors.map((e) => String(e)).join(" | "));
  }
}

/** A tiny Llama whose every dimension is a multiple of 64 (4-bit blocks, GPTQ groups). */
const TINY = {
  model_type: "llama",
  vocab_size: 64,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
};

const SMALLER = {
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};

const ROOT = new URL("../../", import.meta.url).pathname;

/** A sharded checkpoint (index + two shards) holding every common dtype; read through both readers. */
const safetensors: FuzzTarget = {
  format: "safetensors",
  async setup(dir) {
    const f32 = new Float32Array([0.5, -1, 2, 3.25, -0.125, 8]);
    await writeShardedSafetensors(dir, [
      { name: "model.a.weight", dtype: "F32", shape: [2, 3], data: f32 },
      {
        name: "model.b.weight",
        dtype: "BF16",
        shape: [4],
        data: new Uint16Array([0x3f80, 0x4000, 0xbf80, 0]),
      },
      { name: "model.c.weight", dtype: "F16", shape: [3], data: new Uint16Array([0x3c00, 0x4000, 0xc000]) },
      { name: "model.d.ids", dtype: "I32", shape: [2], data: new Int32Array([7, -7]) },
      { name: "model.e.mask", dtype: "U8", shape: [5], data: new Uint8Array([1, 0, 1, 1, 0]) },
      { name: "model.f.big", dtype: "I64", shape: [2], data: new BigInt64Array([1n, -2n]) },
    ], { maxShardBytes: 32, metadata: { format: "pt" } });
  },
  files: [
    { path: "model-00001-of-00003.safetensors", kind: "safetensors" },
    { path: "model-00002-of-00003.safetensors", kind: "safetensors" },
    { path: "model-00003-of-00003.safetensors", kind: "safetensors" },
    { path: "model.safetensors.index.json", kind: "json" },
    { path: "model.safetensors.index.json", kind: "json" },
  ],
  async load(dir) {
    const errors: unknown[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        if (!e.name.endsWith(".safetensors")) continue;
        const path = `${dir}/${e.name}`;
        const { tensors } = decodeSafetensors(await Deno.readFile(path), path);
        for (const t of tensors.values()) if (t.data.byteLength < 0) throw new Error("unreachable");
      }
    } catch (e) {
      errors.push(e);
    }
    try {
      using ckpt = await openCheckpoint(dir);
      for (const name of ckpt.names()) {
        await ckpt.readTyped(name);
        await ckpt.readFloat32(name);
      }
    } catch (e) {
      errors.push(e);
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new SeveralErrors(errors);
    return "accepted";
  },
};

/** The tiny-random Llama GGUF fixture (F32 / F16 / quantized tensors), every tensor read and dequantized. */
const gguf: FuzzTarget = {
  format: "gguf",
  async setup(dir) {
    await Deno.copyFile(`${ROOT}tests/fixtures/external/gguf/llama-2-tiny-random.gguf`, `${dir}/model.gguf`);
  },
  files: [{ path: "model.gguf", kind: "gguf" }],
  async load(dir) {
    using g = await openGguf(`${dir}/model.gguf`);
    for (const t of g.header.tensors) {
      if (GGUF_DEQUANT_TYPES.includes(t.typeName)) await g.readFloat32(t.name);
      else await g.readBytes(t.name);
    }
    return "accepted";
  },
  mustName: (dir) => `${dir}/model.gguf`,
};

/** A BF16 checkpoint of the tiny Llama (config.json + model.safetensors), loaded with `loadModel`. */
const model: FuzzTarget = {
  format: "model",
  async setup(dir) {
    const m = initModel({ ...TINY, tie_word_embeddings: false }, { seed: 3 });
    try {
      await saveCheckpoint(m, dir, { dtype: "BF16" });
    } finally {
      m.dispose();
    }
  },
  files: [
    { path: "model.safetensors", kind: "safetensors" },
    { path: "model.safetensors", kind: "safetensors" },
    { path: "config.json", kind: "json" },
    { path: "config.json", kind: "json" },
  ],
  async load(dir) {
    (await loadModel(dir)).dispose();
    return "accepted";
  },
};

/** An HF tokenizer folder (byte-level BPE tokenizer.json, tokenizer_config.json with a chat template). */
const tokenizerDir: FuzzTarget = {
  format: "tokenizer",
  async setup(dir) {
    await Deno.copyFile(
      `${ROOT}tests/fixtures/external/tokenizers/bytelevel-bpe-2000.tokenizer.json`,
      `${dir}/tokenizer.json`,
    );
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify(
        { bos_token: "<s>", eos_token: "</s>", chat_template: CHATML, model_max_length: 512 },
        null,
        2,
      ),
    );
  },
  files: [
    { path: "tokenizer.json", kind: "json" },
    { path: "tokenizer.json", kind: "json" },
    { path: "tokenizer_config.json", kind: "json" },
  ],
  async load(dir) {
    const tok = await loadTokenizer(dir);
    const ids = tok.encode("To be, or not to be: that is the question.");
    tok.decode(ids);
    tok.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true });
    return "accepted";
  },
};

/** A bitsandbytes NF4 (double-quantized) checkpoint of the tiny Llama, loaded with `loadModel`. */
const bnb4bit: FuzzTarget = {
  format: "bnb4bit",
  async setup(dir) {
    const base = `${dir}.base`;
    const m = initModel(TINY, { seed: 3 });
    try {
      await saveCheckpoint(m, base);
    } finally {
      m.dispose();
    }
    await quantizeCheckpoint(base, dir, { overwrite: true });
    await Deno.remove(base, { recursive: true });
  },
  files: [
    { path: "model.safetensors", kind: "safetensors" },
    { path: "model.safetensors", kind: "safetensors" },
    { path: "model.safetensors", kind: "safetensors" },
    { path: "config.json", kind: "json" },
  ],
  async load(dir) {
    (await loadModel(dir)).dispose();
    return "accepted";
  },
};

/** The GPTQ v1 group-32 fixture (AutoGPTQ layout), loaded with `loadModel`. */
const gptq: FuzzTarget = {
  format: "gptq",
  async setup(dir) {
    const src = `${ROOT}tests/fixtures/gptq_model/v1_g32`;
    for (const f of ["config.json", "quantize_config.json", "model.safetensors"]) {
      await Deno.copyFile(`${src}/${f}`, `${dir}/${f}`);
    }
  },
  files: [
    { path: "model.safetensors", kind: "safetensors" },
    { path: "model.safetensors", kind: "safetensors" },
    { path: "model.safetensors", kind: "safetensors" },
    { path: "config.json", kind: "json" },
    { path: "quantize_config.json", kind: "json" },
  ],
  async load(dir) {
    (await loadModel(dir)).dispose();
    return "accepted";
  },
};

/** A PEFT LoRA adapter (q_proj, v_proj, r=2) of the tiny Llama, loaded onto a fresh base. */
const peft: FuzzTarget = {
  format: "peft",
  async setup(dir) {
    const m = attachLoRA(initModel(TINY, { seed: 3 }), { r: 2, targetModules: ["q_proj", "v_proj"] });
    try {
      await saveAdapter(m, dir);
    } finally {
      m.dispose();
    }
  },
  files: [
    { path: "adapter_model.safetensors", kind: "safetensors" },
    { path: "adapter_model.safetensors", kind: "safetensors" },
    { path: "adapter_config.json", kind: "json" },
  ],
  async load(dir) {
    const m = initModel(TINY, { seed: 3 });
    try {
      await loadAdapter(m, dir);
    } finally {
      m.dispose();
    }
    return "accepted";
  },
};

const STATE_DATA = Array.from({ length: 4 }, (_, i) => ({ ids: [1 + i, 2 + i, 3 + i, 4 + i, 5] }));
const STATE_OPTIONS: TrainOptions = {
  lr: 1e-2,
  batchSize: 2,
  steps: 3,
  measureMemory: false,
  optimizer: "adamw8bit",
};
const stateModel = () => attachLoRA(initModel(SMALLER, { seed: 1 }), { r: 2, targetModules: ["q_proj"] });

/** A `step-2` training state (LoRA, 8-bit AdamW) saved by `train`, resumed with `resumeFrom`. */
const state: FuzzTarget = {
  format: "state",
  async setup(dir) {
    const out = `${dir}.run`;
    const m = stateModel();
    try {
      await train(m, STATE_DATA, {
        ...STATE_OPTIONS,
        saveEvery: 1,
        outputDir: out,
        onStep: (r) => {
          if (r.step === 2) throw new Error("stop after the save of step 2");
        },
      }).catch(() => {});
    } finally {
      m.dispose();
    }
    await Deno.remove(dir);
    await Deno.rename(`${out}/step-2`, dir);
    await Deno.remove(out, { recursive: true });
  },
  files: [
    { path: "trainer_state.json", kind: "json" },
    { path: "optimizer.json", kind: "json" },
    { path: "trainable.safetensors", kind: "safetensors" },
    { path: "optimizer.safetensors", kind: "safetensors" },
    { path: "adapter_config.json", kind: "json" },
  ],
  async load(dir) {
    const m = stateModel();
    try {
      await train(m, STATE_DATA, { ...STATE_OPTIONS, resumeFrom: dir });
      return "accepted";
    } catch (e) {
      if (e instanceof DivergenceError) return "diverged"; // damaged weights that load; the guard stopped
      throw e;
    } finally {
      m.dispose();
    }
  },
};

const RECIPE = `# fuzz template
model: models/tiny
quantize: { type: nf4, doubleQuant: true, blocksize: 64 }
data: data/train.jsonl
evalData: data/eval.jsonl
output: out/run
adapter:
  type: lora
  r: 4
  alpha: 8
  targetModules: [q_proj, v_proj]
train:
  steps: 20
  lr: 0.001
  batchSize: 4
  gradAccumSteps: 2
  optimizer: adamw
  warmupSteps: 2
  evalEvery: 5
  maxGradNorm: 1.0
  tokenize: { maxLength: 128, truncation: left }
`;

/** A YAML recipe, read as `deno task train` reads it (`readRecipe`). */
const recipe: FuzzTarget = {
  format: "recipe",
  async setup(dir) {
    await Deno.writeTextFile(`${dir}/recipe.yaml`, RECIPE);
  },
  files: [{ path: "recipe.yaml", kind: "yaml" }],
  async load(dir) {
    await readRecipe(`${dir}/recipe.yaml`);
    return "accepted";
  },
  mustName: (dir) => `${dir}/recipe.yaml`,
};

const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
let tokenizer: Tokenizer | undefined;
function fuzzTokenizer(): Tokenizer {
  if (tokenizer) return tokenizer;
  const json = JSON.parse(
    Deno.readTextFileSync(`${ROOT}tests/fixtures/external/tokenizers/bytelevel-bpe-2000.tokenizer.json`),
  );
  json.added_tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map((content, i) => ({
    id: 2000 + i,
    content,
    special: true,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
  }));
  tokenizer = createTokenizer({
    tokenizerJson: json,
    tokenizerConfig: { eos_token: "<|im_end|>", pad_token: "<|endoftext|>", chat_template: CHATML },
  });
  return tokenizer;
}

const JSONL = [
  { text: "To be, or not to be: that is the question." },
  { prompt: "Q: 2+2?\nA:", completion: " 4" },
  { instruction: "Say hi.", input: "politely", output: "Hello!" },
  { messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] },
  { conversations: [{ from: "human", value: "hi" }, { from: "gpt", value: "hello" }] },
  { ids: [1, 2, 3, 4], labels: [-100, 2, 3, 4] },
].map((r) => JSON.stringify(r)).join("\n") + "\n";

/** JSON-lines training data of every record shape, read and tokenized as `train()` does. */
const jsonl: FuzzTarget = {
  format: "jsonl",
  async setup(dir) {
    await Deno.writeTextFile(`${dir}/data.jsonl`, JSONL);
  },
  files: [{ path: "data.jsonl", kind: "jsonl" }],
  async load(dir) {
    tokenizeRecords(await readJsonl(`${dir}/data.jsonl`), fuzzTokenizer(), { maxLength: 64 });
    return "accepted";
  },
  mustName: (dir) => `${dir}/data.jsonl`,
  // file:LINE, or the file alone when it cannot be opened at all
  mustMatch: (dir) => new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/data\\.jsonl(:\\d+|'$)`),
};

/** Every target, by format. */
export const FUZZ_TARGETS: Readonly<Record<FuzzFormat, FuzzTarget>> = {
  safetensors,
  gguf,
  model,
  tokenizer: tokenizerDir,
  bnb4bit,
  gptq,
  peft,
  state,
  recipe,
  jsonl,
};

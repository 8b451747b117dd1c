/**
 * YAML training recipes: the same options as `train()`, plus where the model,
 * data and output live. Used by `deno task train recipe.yaml`.
 *
 * ```yaml
 * model: notebooks/models/tiny-shakespeare-llama   # HF directory (relative to the recipe)
 * quantize: false                                  # or nf4 / fp4
 * computeDtype: float32                            # or bfloat16 (4-bit layers' matmuls)
 * data: ../data/herald_train.jsonl                 # JSON lines of training records
 * evalData: ../data/herald_eval.jsonl
 * output: ../../out/recipe-run
 * train: { batchSize: 8, gradAccumSteps: 2, lr: 0.001, steps: 60, optimizer: adamw }
 * ```
 * @module
 */
import { parseDocument } from "npm:yaml@2.9.1";
import type { TrainingRecord } from "./data.ts";
import type { TrainOptions } from "./trainer.ts";
import { readJsonl as readJsonlFile, streamJsonl as streamJsonlFile } from "../io/jsonl.ts";
import { type AnyField, defineOptions, type FieldsOf, object, oneOf, string } from "../options/schema.ts";
import { quantizeField, type QuantizeOption } from "../quant/quantize_option.ts";
import { COMPUTE_DTYPES, type ComputeDtype } from "../quant/compute_dtype.ts";
import { type DyLoRAConfig, dyloraSchema, type LoRAConfig, loraSchema } from "../adapters/attach.ts";
import { trainFields, trainOptionsSchema } from "./train_options.ts";

/** `train()` options as a recipe writes them (all but the ones that are not data). */
export type RecipeTrainOptions = Omit<TrainOptions, "tokenizer" | "onStep" | "evalData">;

/** The adapter of a recipe: its kind plus `attachLoRA` / `attachDyLoRA` options. */
export type RecipeAdapter = ({ type: "lora" } & LoRAConfig) | ({ type: "dylora" } & DyLoRAConfig);

/** The fields of a recipe file (YAML), as written. */
export interface RecipeFile {
  /** HF model directory (relative to the recipe). */
  model: string;
  /** 4-bit base: nf4, fp4, { type, doubleQuant, blocksize } (as `loadModel`) or false. @default false */
  quantize?: QuantizeOption | false;
  /** Precision of the 4-bit layers' matmuls: float32 or bfloat16 (as `loadModel`). @default "float32" */
  computeDtype?: ComputeDtype;
  /** JSON lines of training records (relative to the recipe). */
  data: string;
  /** JSON lines of held-out records for eval. */
  evalData?: string;
  /** Output folder (relative to the recipe). @default "out/train" */
  output?: string;
  /** Adapter to attach before training: `type: lora | dylora` plus `attachLoRA` / `attachDyLoRA` options. */
  adapter?: RecipeAdapter;
  /** `train()` options (all but tokenizer, onStep and evalData). */
  train?: RecipeTrainOptions;
}

/** A parsed recipe with paths resolved against the recipe's folder. */
export interface Recipe {
  model: string;
  quantize: QuantizeOption | false;
  computeDtype: ComputeDtype;
  data: string;
  evalData?: string;
  output: string;
  /** Adapter to attach before training, as written (its options checked). */
  adapter?: RecipeAdapter;
  /** `train()` options as written (checked; `train()` fills the defaults). */
  train: RecipeTrainOptions;
}

const { tokenizer: _t, onStep: _o, evalData: _e, ...recipeTrainFields } = trainFields;

const LORA_ONLY = ["rslora", "useDora"];
const DYLORA_ONLY = ["mode"];
const adapterObject = object(
  "Adapter to attach before training: type lora | dylora plus attachLoRA / attachDyLoRA options.",
  {
    type: oneOf("Adapter kind.", ["lora", "dylora"] as const, { required: true }),
    ...loraSchema.fields,
    mode: dyloraSchema.fields.mode,
  },
  { renamed: loraSchema.renamed },
);
const adapterField: AnyField = {
  ...adapterObject,
  example: { type: "lora", r: 8, targetModules: ["q_proj", "v_proj"] },
  check(value: unknown, at: { fn: string; path: string }) {
    adapterObject.check(value, at);
    const v = value as Record<string, unknown>;
    const other = v.type === "lora" ? DYLORA_ONLY : LORA_ONLY;
    for (const k of other) {
      if (k in v) {
        throw new TypeError(`${at.fn}: option "${at.path}.${k}" does not apply to a ${v.type} adapter`);
      }
    }
    return value;
  },
};

/** The schema of a recipe file; `fn` in messages is the file name. */
export const recipeFields = {
  model: string("HF model directory (relative to the recipe).", { required: true, nonEmpty: true }),
  quantize: quantizeField("4-bit base: nf4, fp4, { type, doubleQuant, blocksize } or false.", { off: true }),
  computeDtype: oneOf(
    "Precision of the 4-bit layers' matmuls: float32 or bfloat16 (as loadModel).",
    COMPUTE_DTYPES,
    {
      default: "float32",
    },
  ),
  data: string("JSON lines of training records (relative to the recipe).", {
    required: true,
    nonEmpty: true,
  }),
  evalData: string("JSON lines of held-out records for eval.", { nonEmpty: true }),
  output: string("Output folder (relative to the recipe).", { default: "out/train", nonEmpty: true }),
  adapter: adapterField,
  train: object("train() options (all but tokenizer, onStep and evalData).", recipeTrainFields, {
    renamed: trainOptionsSchema.renamed,
  }),
} satisfies FieldsOf<RecipeFile>;

/** Old recipe keys and their new names. */
const RECIPE_RENAMED = { eval_data: "evalData", quant: "quantize", lora: "adapter" };

function resolvePath(base: string, p: string): string {
  return p.startsWith("/") ? p : `${base}/${p}`;
}

/**
 * Parses recipe YAML text. `baseDir` is the folder relative paths are resolved against.
 *
 * @example
 * ```ts
 * import { parseRecipe } from "./recipe.ts";
 * const r = parseRecipe("model: m\ndata: d.jsonl\ntrain: { steps: 3, lr: 0.01 }\n", "/x", "r.yaml");
 * if (r.model !== "/x/m" || r.train.steps !== 3) throw new Error("bad recipe");
 * ```
 */
export function parseRecipe(text: string, baseDir: string, file = "recipe"): Recipe {
  let raw: unknown;
  try {
    const doc = parseDocument(text);
    // a warning (an unresolved tag such as `!lpha: 8`) is a mistake in a recipe too: refuse it
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw problem;
    raw = doc.toJS();
  } catch (e) {
    const message = (e as Error).message;
    if (/Maximum call stack/.test(message)) {
      // the yaml parser recurses per nesting level; say what it means instead of the engine's words
      const at = / at line \d+, column \d+/.exec(message)?.[0] ?? "";
      throw new SyntaxError(
        `${file}: invalid YAML: nested too deeply${at} (a recipe needs a few levels); check the brackets`,
      );
    }
    throw new SyntaxError(`${file}: invalid YAML: ${message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new TypeError(`${file}: a recipe must be a YAML mapping with model, data and train`);
  }
  const r = raw as Record<string, unknown>;
  // Validation from the schema, with the file as the "function" in messages; values are kept as
  // written (train() and loadModel fill their own defaults).
  defineOptions(file, recipeFields, { renamed: RECIPE_RENAMED }).parse(r);
  const q = (r.quantize ?? false) as QuantizeOption | false;
  const train = (r.train ?? {}) as Recipe["train"];
  return {
    model: resolvePath(baseDir, r.model as string),
    quantize: q as Recipe["quantize"],
    computeDtype: (r.computeDtype ?? "float32") as ComputeDtype,
    data: resolvePath(baseDir, r.data as string),
    evalData: typeof r.evalData === "string" ? resolvePath(baseDir, r.evalData) : undefined,
    output: resolvePath(baseDir, typeof r.output === "string" ? r.output : "out/train"),
    adapter: r.adapter as RecipeAdapter | undefined,
    train,
  };
}

/**
 * Reads and parses a recipe file (relative paths resolve against its folder). The file must be
 * UTF-8 (a byte order mark is skipped): invalid bytes are refused with their line, not read as
 * replacement characters into a path or a value. Every error names the file.
 *
 * @example
 * ```ts
 * import { readRecipe } from "./recipe.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/r.yaml`, "\uFEFFmodel: m\ndata: d.jsonl\n");
 * if ((await readRecipe(`${dir}/r.yaml`)).data !== `${dir}/d.jsonl`) throw new Error("paths");
 * await Deno.writeFile(`${dir}/r.yaml`, new Uint8Array([0x6d, 0x3a, 0x20, 0xff, 0x0a]));
 * const err = await readRecipe(`${dir}/r.yaml`).catch((e) => e as Error);
 * if (!(err instanceof SyntaxError) || !err.message.startsWith(`${dir}/r.yaml:1: not valid UTF-8`)) throw err;
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readRecipe(path: string): Promise<Recipe> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`cannot read the recipe ${path}: ${(e as Error).message}`, { cause: e });
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // the first bad byte: feed the bytes one by one (an unfinished sequence at the end is bad too)
    const stream = new TextDecoder("utf-8", { fatal: true });
    let bad = 0;
    for (; bad < bytes.length; bad++) {
      try {
        stream.decode(bytes.subarray(bad, bad + 1), { stream: true });
      } catch {
        break;
      }
    }
    const line = bytes.subarray(0, bad).filter((b) => b === 0x0a).length + 1;
    throw new SyntaxError(`${path}:${line}: not valid UTF-8 (byte ${bad}); save the recipe as UTF-8`);
  }
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
  return parseRecipe(text, dir, path);
}

/**
 * Reads JSON-lines training records (the reader lives in `lib/io/jsonl.ts`), naming the
 * file and line of a bad record. The type parameter states the record shape you expect.
 */
export function readJsonl<T = TrainingRecord>(path: string): Promise<T[]> {
  return readJsonlFile<T>(path);
}

/**
 * Streams JSON-lines training records one by one, reading the file incrementally (see
 * `lib/io/jsonl.ts`): `train(model, streamJsonl(path), { steps })` never holds the whole file.
 * Errors name the file and line. The type parameter states the record shape you expect.
 */
export function streamJsonl<T = TrainingRecord>(path: string): AsyncGenerator<T, void, undefined> {
  return streamJsonlFile<T>(path);
}

/**
 * YAML training recipes: the same options as `train()`, plus where the model,
 * data and output live. Used by `deno task train recipe.yaml`.
 *
 * ```yaml
 * model: notebooks/models/tiny-shakespeare-llama   # HF directory (relative to the recipe)
 * quantize: false                                  # or nf4 / fp4
 * data: ../data/herald_train.jsonl                 # JSON lines of training records
 * eval_data: ../data/herald_eval.jsonl
 * output: ../../out/recipe-run
 * train: { batchSize: 8, gradAccumSteps: 2, lr: 0.001, steps: 60, optimizer: adamw }
 * ```
 * @module
 */
import { parse } from "npm:yaml@2.9.1";
import type { TrainingRecord } from "./data.ts";
import type { TrainOptions } from "./trainer.ts";
import { readJsonl as readJsonlFile } from "../io/jsonl.ts";

/** A parsed recipe with paths resolved against the recipe's folder. */
export interface Recipe {
  model: string;
  quantize: "nf4" | "fp4" | false;
  data: string;
  evalData?: string;
  output: string;
  /** Adapter to attach before training (see the adapters issue). */
  adapter?: Record<string, unknown>;
  train: Omit<TrainOptions, "tokenizer" | "onStep" | "evalData">;
}

const RECIPE_KEYS = new Set(["model", "quantize", "data", "eval_data", "output", "adapter", "train"]);

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
    raw = parse(text);
  } catch (e) {
    throw new SyntaxError(`${file}: invalid YAML: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new TypeError(`${file}: a recipe must be a YAML mapping with model, data and train`);
  }
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!RECIPE_KEYS.has(k)) {
      throw new TypeError(`${file}: unknown key "${k}" (known: ${[...RECIPE_KEYS].join(", ")})`);
    }
  }
  for (const k of ["model", "data"]) {
    if (typeof r[k] !== "string") throw new TypeError(`${file}: "${k}" must be a path string`);
  }
  const q = r.quantize ?? false;
  if (q !== false && q !== "nf4" && q !== "fp4") {
    throw new RangeError(`${file}: quantize must be false, nf4 or fp4`);
  }
  const train = (r.train ?? {}) as Recipe["train"];
  if (typeof train !== "object" || Array.isArray(train)) {
    throw new TypeError(`${file}: "train" must be a mapping`);
  }
  return {
    model: resolvePath(baseDir, r.model as string),
    quantize: q as Recipe["quantize"],
    data: resolvePath(baseDir, r.data as string),
    evalData: typeof r.eval_data === "string" ? resolvePath(baseDir, r.eval_data) : undefined,
    output: resolvePath(baseDir, typeof r.output === "string" ? r.output : "out/train"),
    adapter: r.adapter as Record<string, unknown> | undefined,
    train,
  };
}

/**
 * Reads JSON-lines training records (the reader lives in `lib/io/jsonl.ts`), naming the
 * file and line of a bad record. The type parameter states the record shape you expect.
 */
export function readJsonl<T = TrainingRecord>(path: string): Promise<T[]> {
  return readJsonlFile<T>(path);
}

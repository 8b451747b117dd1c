/**
 * The formats the fuzzer covers, in report order: a module of its own with no imports, so that
 * `deno task fuzz --help` lists them without loading the fuzz targets.
 * @module
 */

/** The formats the fuzzer covers. */
export const FUZZ_FORMATS = [
  "safetensors",
  "gguf",
  "model",
  "tokenizer",
  "bnb4bit",
  "gptq",
  "peft",
  "state",
  "recipe",
  "jsonl",
] as const;

/** One of {@linkcode FUZZ_FORMATS}. */
export type FuzzFormat = typeof FUZZ_FORMATS[number];

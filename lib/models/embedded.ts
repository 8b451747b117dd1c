/**
 * Paths of the embedded default model and its datasets (shipped in `notebooks/`).
 * @module
 */

function here(rel: string): string {
  return decodeURIComponent(new URL(rel, import.meta.url).pathname);
}

/**
 * HF directory of the embedded default model: a 0.9M-parameter Llama (4 layers,
 * 4 query heads sharing 2 kv heads, byte-level BPE with 512 tokens) pretrained on
 * tiny Shakespeare by `scripts/pretrain_embedded.ts`.
 *
 * @example
 * ```ts
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * const config = JSON.parse(await Deno.readTextFile(`${EMBEDDED_MODEL_DIR}/config.json`));
 * if (config.num_key_value_heads >= config.num_attention_heads) throw new Error("expected GQA");
 * ```
 */
export const EMBEDDED_MODEL_DIR: string = here("../../notebooks/models/tiny-shakespeare-llama");

/** Folder with the corpus and the herald task (`herald_train.jsonl`, `herald_eval.jsonl`). */
export const EMBEDDED_DATA_DIR: string = here("../../notebooks/data");

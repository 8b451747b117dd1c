/**
 * Training records → token ids with labels.
 *
 * Records follow the contract: `{ text }`, `{ prompt, completion }` (loss on the
 * completion only), `{ messages }` (chat template; loss on the last assistant
 * turn), or pre-tokenized `{ ids, labels? }` (label −100 = ignored, as in Transformers).
 * @module
 */
import type { ChatMessage } from "../io/chat_template.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { sourceOf } from "../io/jsonl.ts";
import { checkRecord } from "./record_check.ts";
import { defineOptions } from "../options/schema.ts";
import { tokenizeFields } from "./train_options.ts";

/** Label value that excludes a position from the loss (Transformers' convention). */
export const IGNORE_INDEX = -100;

/** One training record. */
export type TrainingRecord =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: ChatMessage[] }
  | { ids: number[]; labels?: number[] };

/** A tokenized example: `labels[t]` is the target for predicting token t from tokens < t. */
export interface Example {
  ids: number[];
  labels: number[];
}

/** Options for {@linkcode tokenizeRecord}. */
export interface TokenizeOptions {
  /** Longest sequence kept (tokens). @default {512} */
  maxLength?: number;
  /** Which side is cut when too long ("left" keeps the end, like the QLoRA seed). @default {"left"} */
  truncation?: "left" | "right";
  /** Append eos after text / completion. @default {true} */
  addEos?: boolean;
}

function truncate(ex: Example, maxLength: number, side: "left" | "right"): Example {
  if (ex.ids.length <= maxLength) return ex;
  return side === "left"
    ? { ids: ex.ids.slice(-maxLength), labels: ex.labels.slice(-maxLength) }
    : { ids: ex.ids.slice(0, maxLength), labels: ex.labels.slice(0, maxLength) };
}

/**
 * Tokenizes one record. Prompt tokens get label −100 so only the completion is learned.
 *
 * @example
 * ```ts
 * import { tokenizeRecord } from "./data.ts";
 * const ex = tokenizeRecord({ ids: [5, 6, 7], labels: [-100, 6, 7] }, undefined);
 * if (ex.labels[0] !== -100) throw new Error("labels kept");
 * ```
 */
export function tokenizeRecord(
  record: TrainingRecord,
  tokenizer: Tokenizer | undefined,
  options: TokenizeOptions = {},
): Example {
  const maxLength = options.maxLength ?? 512;
  const side = options.truncation ?? "left";
  const addEos = options.addEos ?? true;
  checkRecord(record); // names the field at fault
  if ("ids" in record) {
    const labels = record.labels ?? record.ids;
    if (labels.length !== record.ids.length) {
      throw new TypeError(`record has ${record.ids.length} ids but ${labels.length} labels`);
    }
    return truncate({ ids: [...record.ids], labels: [...labels] }, maxLength, side);
  }
  if (!tokenizer) throw new TypeError("text records need a tokenizer (pass { tokenizer } to train())");
  const eos = addEos && tokenizer.eosId !== undefined ? [tokenizer.eosId] : [];
  const bos = tokenizer.bosId !== undefined ? [tokenizer.bosId] : [];
  const enc = (s: string) => tokenizer.encode(s, { addSpecialTokens: false });
  if ("text" in record) {
    const ids = [...bos, ...enc(record.text), ...eos];
    return truncate({ ids, labels: ids.slice() }, maxLength, side);
  }
  let prompt: string, completion: string;
  if ("prompt" in record) {
    prompt = record.prompt;
    completion = record.completion;
  } else if ("messages" in record) {
    const msgs = record.messages;
    const last = msgs[msgs.length - 1];
    if (!last || last.role !== "assistant") {
      throw new TypeError("a { messages } record must end with an assistant message (the target)");
    }
    prompt = tokenizer.applyChatTemplate(msgs.slice(0, -1), { addGenerationPrompt: true });
    const full = tokenizer.applyChatTemplate(msgs, { addGenerationPrompt: false });
    if (!full.startsWith(prompt)) {
      throw new Error("chat template renders the prompt differently with and without the answer");
    }
    completion = full.slice(prompt.length);
    // The template already closes the turn; avoid a double eos.
    if (tokenizer.eosToken && completion.endsWith(tokenizer.eosToken)) {
      completion = completion.slice(0, -tokenizer.eosToken.length);
    }
    // Templates usually start with the bos token text: drop it, bos is added as an id.
    if (tokenizer.bosToken && prompt.startsWith(tokenizer.bosToken)) {
      prompt = prompt.slice(tokenizer.bosToken.length);
    }
  } else {
    throw new TypeError(
      `unknown record shape with keys [${
        Object.keys(record)
      }]: use {text}, {prompt, completion}, {messages} or {ids, labels}`,
    );
  }
  const p = [...bos, ...enc(prompt)];
  const c = [...enc(completion), ...eos];
  return truncate(
    { ids: [...p, ...c], labels: [...p.map(() => IGNORE_INDEX), ...c] },
    maxLength,
    side,
  );
}

/** Tokenizes every record (sync arrays) — see {@linkcode tokenizeRecord}. */
export function tokenizeRecords(
  records: TrainingRecord[],
  tokenizer: Tokenizer | undefined,
  options: TokenizeOptions = {},
): Example[] {
  const o = tokenizeSchema.parse(options);
  return records.map((r, i) => {
    try {
      return tokenizeRecord(r, tokenizer, o);
    } catch (e) {
      const src = sourceOf(r); // file:line when the record came from readJsonl
      (e as Error).message = `record ${i}${src ? ` (${src})` : ""}: ${(e as Error).message}`;
      throw e;
    }
  });
}

/** The schema of `tokenize` options (train's `tokenize`, {@linkcode tokenizeRecords}). */
const tokenizeSchema = defineOptions("tokenize", tokenizeFields);

/** Number of positions that contribute to the loss (labels shifted by one, −100 excluded). */
export function countTargets(ex: Example): number {
  let n = 0;
  for (let t = 1; t < ex.labels.length; t++) if (ex.labels[t] !== IGNORE_INDEX) n++;
  return n;
}

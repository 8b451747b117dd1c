/**
 * Training records → token ids with labels.
 *
 * Records follow the contract: `{ text }`, `{ prompt, completion }` (loss on the
 * completion only), alpaca `{ instruction, input?, output }` (Stanford Alpaca's prompt; loss on
 * the output), `{ messages }` or ShareGPT `{ conversations: [{ from, value }] }` (chat template;
 * loss on every assistant turn, the template's turn headers and the other roles masked), or
 * pre-tokenized `{ ids, labels? }` (label −100 = ignored, as in Transformers).
 * @module
 */
import type { ChatMessage } from "../io/chat_template.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { sourceOf } from "../io/jsonl.ts";
import { checkRecord } from "./record_check.ts";
import { defineOptions } from "../options/schema.ts";
import { tokenizeFields } from "./train_options.ts";
import {
  type AlpacaRecord,
  alpacaToPrompt,
  type ShareGptRecord,
  shareGptToMessages,
} from "./record_formats.ts";

/** Label value that excludes a position from the loss (Transformers' convention). */
export const IGNORE_INDEX = -100;

/** One training record. */
export type TrainingRecord =
  | { text: string }
  | { prompt: string; completion: string }
  | AlpacaRecord
  | { messages: ChatMessage[] }
  | ShareGptRecord
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
  } else if ("instruction" in record) {
    ({ prompt, completion } = alpacaToPrompt(record));
  } else if ("messages" in record || "conversations" in record) {
    const msgs = "messages" in record ? record.messages : shareGptToMessages(record);
    const segments = chatSegments(tokenizer, msgs);
    // Templates usually start with the bos token text: drop it, bos is added as an id.
    if (tokenizer.bosToken && segments[0].text.startsWith(tokenizer.bosToken)) {
      segments[0].text = segments[0].text.slice(tokenizer.bosToken.length);
    }
    const last = segments[segments.length - 1];
    // The template already closes the final turn with eos (maybe then a newline): drop that text,
    // eos is added as an id.
    const closed = last.text.trimEnd();
    if (last.train && tokenizer.eosToken && closed.endsWith(tokenizer.eosToken)) {
      last.text = closed.slice(0, -tokenizer.eosToken.length);
    }
    const ids = [...bos], labels: number[] = bos.map(() => IGNORE_INDEX);
    for (const s of segments) {
      const t = enc(s.text);
      ids.push(...t);
      labels.push(...(s.train ? t : t.map(() => IGNORE_INDEX)));
    }
    if (last.train) {
      ids.push(...eos);
      labels.push(...eos);
    }
    return truncate({ ids, labels }, maxLength, side);
  } else {
    throw new TypeError(
      `unknown record shape with keys [${
        Object.keys(record)
      }]: use {text}, {prompt, completion}, {instruction, output}, {messages}, {conversations} or {ids, labels}`,
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

/** A piece of a rendered conversation and whether it is learned (an assistant turn). */
export interface ChatSegment {
  text: string;
  train: boolean;
}

/**
 * Splits the chat-template rendering of `messages` into alternating masked and learned pieces:
 * each assistant turn spans from the end of `template(messages[..j], addGenerationPrompt)` (its
 * header is masked) to the end of `template(messages[..j+1])` (its content and closing marker
 * are learned, so the model learns to stop). Every partial rendering must be a prefix of the full
 * one; a template that rewrites earlier turns (e.g. drops past reasoning) is refused.
 *
 * @example
 * ```ts
 * import { chatSegments } from "./data.ts";
 * const tok = { applyChatTemplate: (ms: { role: string; content: string }[], o?: { addGenerationPrompt?: boolean }) =>
 *   ms.map((m) => `<${m.role}>${m.content}</>`).join("") + (o?.addGenerationPrompt ? "<assistant>" : "") };
 * const s = chatSegments(tok as never, [{ role: "user", content: "a" }, { role: "assistant", content: "b" },
 *   { role: "user", content: "c" }, { role: "assistant", content: "d" }]);
 * if (s.filter((x) => x.train).map((x) => x.text).join("|") !== "b</>|d</>") throw new Error(JSON.stringify(s));
 * ```
 */
export function chatSegments(tokenizer: Tokenizer, messages: readonly ChatMessage[]): ChatSegment[] {
  if (!messages.some((m) => m.role === "assistant")) {
    throw new TypeError("a conversation needs at least one assistant message (the target it learns)");
  }
  const full = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false });
  const segments: ChatSegment[] = [];
  let pos = 0;
  messages.forEach((m, j) => {
    if (m.role !== "assistant") return;
    const start = tokenizer.applyChatTemplate(messages.slice(0, j), { addGenerationPrompt: true }).length;
    const endText = tokenizer.applyChatTemplate(messages.slice(0, j + 1), { addGenerationPrompt: false });
    const startText = full.slice(0, start);
    if (
      !full.startsWith(endText) || start < pos || endText.length < start ||
      tokenizer.applyChatTemplate(messages.slice(0, j), { addGenerationPrompt: true }) !== startText
    ) {
      throw new Error(
        `the chat template renders the conversation up to message ${j} differently from the start of the ` +
          "whole conversation, so assistant turns cannot be located; use { prompt, completion } records " +
          "or a template that renders earlier turns unchanged",
      );
    }
    segments.push({ text: full.slice(pos, start), train: false }, {
      text: full.slice(start, endText.length),
      train: true,
    });
    pos = endText.length;
  });
  if (pos < full.length) segments.push({ text: full.slice(pos), train: false });
  return segments.filter((s, i) => s.text !== "" || i === 0);
}

/**
 * Tokenizes every record (sync arrays) — see {@linkcode tokenizeRecord}. Errors name the record
 * (`record i`, counted from `offset`: the index of `records[0]` in the whole data, for records
 * tokenized in pieces as they stream in) and its `file:line` when it came from `readJsonl`.
 *
 * @example
 * ```ts
 * import { tokenizeRecords } from "./data.ts";
 * const err = (() => {
 *   try {
 *     tokenizeRecords([{ ids: [1], labels: [1, 2] }], undefined, {}, 7);
 *   } catch (e) {
 *     return (e as Error).message;
 *   }
 * })();
 * if (!err?.startsWith("record 7: ")) throw new Error(err);
 * ```
 */
export function tokenizeRecords(
  records: TrainingRecord[],
  tokenizer: Tokenizer | undefined,
  options: TokenizeOptions = {},
  offset = 0,
): Example[] {
  const o = tokenizeSchema.parse(options);
  return records.map((r, i) => {
    try {
      return tokenizeRecord(r, tokenizer, o);
    } catch (e) {
      const src = sourceOf(r); // file:line when the record came from readJsonl / streamJsonl
      (e as Error).message = `record ${offset + i}${src ? ` (${src})` : ""}: ${(e as Error).message}`;
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

/**
 * HF tokenizers: load a `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`,
 * `generation_config.json`, `chat_template.jinja` when present) with `@huggingface/tokenizers`
 * and expose a small, id-based {@linkcode Tokenizer}.
 *
 * Special-token ids are looked up in this order: `tokenizer_config.json`, then
 * `special_tokens_map.json`, then the `*_token_id` fields of `generation_config.json`.
 * Without a pad token the pad id falls back to the eos id (the usual "pad = eos" of
 * QLoRA-style fine-tuning; padded positions are masked out of the loss anyway).
 * @module
 */

import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import {
  type ChatMessage,
  compileChatTemplate,
  type CompiledChatTemplate,
  resolveChatTemplate,
} from "./chat_template.ts";
import { FormatError } from "./format_error.ts";
import { boolean, defineOptions, type FieldsOf, string } from "../options/schema.ts";

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Add the special tokens of the tokenizer's post-processor (e.g. bos for Llama), as transformers does.
   * @default true
   */
  addSpecialTokens?: boolean;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /**
   * Drop special tokens (bos, eos, pad, ...) from the text.
   * @default false
   */
  skipSpecialTokens?: boolean;
}

/** Options of {@linkcode Tokenizer.applyChatTemplate}. */
export interface ApplyChatTemplateOptions {
  /**
   * Append the header that opens the assistant's turn.
   * @default false
   */
  addGenerationPrompt?: boolean;
}

/** Options of {@linkcode loadTokenizer} and {@linkcode createTokenizer}. */
export interface LoadTokenizerOptions {
  /**
   * Chat template source to use instead of the one shipped with the tokenizer.
   * @default undefined (use the shipped one)
   */
  chatTemplate?: string;
  /**
   * Which template to take when `chat_template` is a list of named templates.
   * @default "default"
   */
  chatTemplateName?: string;
}

/** The parsed contents of a tokenizer directory, for {@linkcode createTokenizer}. */
export interface TokenizerSources {
  /** Parsed `tokenizer.json`. */
  tokenizerJson: unknown;
  /** Parsed `tokenizer_config.json`, if any. */
  tokenizerConfig?: Record<string, unknown>;
  /** Parsed `special_tokens_map.json`, if any. */
  specialTokensMap?: Record<string, unknown>;
  /** Parsed `generation_config.json`, if any. */
  generationConfig?: Record<string, unknown>;
  /** Contents of `chat_template.jinja`, if any (wins over `tokenizer_config.json`, as in transformers). */
  chatTemplateFile?: string;
}

/** An HF tokenizer reduced to what fine-tuning and generation need. */
export interface Tokenizer {
  /** One past the largest token id (base vocabulary and added tokens). */
  readonly vocabSize: number;
  /** Beginning-of-sequence id, if the tokenizer defines one. */
  readonly bosId: number | undefined;
  /** End-of-sequence id (the first one when generation_config lists several). */
  readonly eosId: number | undefined;
  /** All ids that end generation (eos of the tokenizer and of `generation_config.json`). */
  readonly eosIds: readonly number[];
  /** Padding id: the pad token's, else {@linkcode Tokenizer.eosId}. */
  readonly padId: number | undefined;
  /** Beginning-of-sequence token text, if any. */
  readonly bosToken: string | undefined;
  /** End-of-sequence token text, if any. */
  readonly eosToken: string | undefined;
  /** `model_max_length` from `tokenizer_config.json`, if given and finite. */
  readonly modelMaxLength: number | undefined;
  /** The chat template source, if the tokenizer has one. */
  readonly chatTemplate: string | undefined;
  /** Text → ids. */
  encode(text: string, options?: EncodeOptions): number[];
  /** Ids → text. */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** The id of a token string, or `undefined`. */
  tokenToId(token: string): number | undefined;
  /** The token string of an id, or `undefined`. */
  idToToken(id: number): string | undefined;
  /** Renders a conversation with the chat template (bos/eos tokens available to it). */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ApplyChatTemplateOptions): string;
}

/** The schema of {@linkcode loadTokenizer}'s and {@linkcode createTokenizer}'s options. */
export const loadTokenizerSchema = defineOptions(
  "loadTokenizer",
  {
    chatTemplate: string("Chat template source to use instead of the one shipped with the tokenizer."),
    chatTemplateName: string("Which template to take when chat_template is a list of named templates.", {
      default: "default",
    }),
  } satisfies FieldsOf<LoadTokenizerOptions>,
);

/** The schema of `Tokenizer.encode`'s options. */
export const encodeSchema = defineOptions(
  "encode",
  {
    addSpecialTokens: boolean("Add the special tokens of the tokenizer's post-processor (e.g. bos).", {
      default: true,
    }),
  } satisfies FieldsOf<EncodeOptions>,
);

/** The schema of `Tokenizer.decode`'s options. */
export const decodeSchema = defineOptions(
  "decode",
  {
    skipSpecialTokens: boolean("Drop special tokens (bos, eos, pad, ...) from the text.", { default: false }),
  } satisfies FieldsOf<DecodeOptions>,
);

/** The schema of `Tokenizer.applyChatTemplate`'s options. */
export const applyChatTemplateSchema = defineOptions(
  "applyChatTemplate",
  {
    addGenerationPrompt: boolean("Append the header that opens the assistant's turn.", { default: false }),
  } satisfies FieldsOf<ApplyChatTemplateOptions>,
);

/**
 * Reads a tokenizer directory (as saved by transformers' `save_pretrained`).
 *
 * @param dir directory holding `tokenizer.json` and optionally `tokenizer_config.json`,
 *   `special_tokens_map.json`, `generation_config.json`, `chat_template.jinja`.
 * @param options chat template override.
 * @returns the loaded {@linkcode Tokenizer}.
 * @throws {Deno.errors.NotFound} when `tokenizer.json` is missing; {FormatError} when a file is malformed.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./tokenizer.ts";
 * const dir = await Deno.makeTempDir();
 * const tokenizer = { // a three-token BPE: "h" + "i" merge into "hi"
 *   model: { type: "BPE", vocab: { h: 0, i: 1, hi: 2 }, merges: [["h", "i"]] },
 *   decoder: { type: "Fuse" }, added_tokens: [{ id: 3, content: "</s>", special: true }],
 * };
 * await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tokenizer));
 * await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ eos_token: "</s>" }));
 * const tok = await loadTokenizer(dir);
 * if (tok.encode("hih").join() !== "2,0") throw new Error("merge not applied");
 * if (tok.decode([2, 0, 3], { skipSpecialTokens: true }) !== "hih") throw new Error("decode");
 * if (tok.eosId !== 3 || tok.padId !== 3 || tok.vocabSize !== 4) throw new Error("special ids");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
  if (typeof dir !== "string" || dir === "") {
    throw new TypeError(`loadTokenizer() needs a directory path, received ${JSON.stringify(dir)}`);
  }
  const base = dir.replace(/\/+$/, "") || "/";
  const path = (name: string) => `${base}/${name}`;
  const tokenizerPath = path("tokenizer.json");
  let text: string;
  try {
    text = await Deno.readTextFile(tokenizerPath);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(
        `Tokenizer file not found: ${tokenizerPath}; pass the directory that holds the HF tokenizer.json`,
        { cause },
      );
    }
    throw cause;
  }
  const sources: TokenizerSources = {
    tokenizerJson: parseJsonObject(text, tokenizerPath),
    tokenizerConfig: await readOptionalJson(path("tokenizer_config.json")),
    specialTokensMap: await readOptionalJson(path("special_tokens_map.json")),
    generationConfig: await readOptionalJson(path("generation_config.json")),
    chatTemplateFile: await readOptionalText(path("chat_template.jinja")),
  };
  return createTokenizerFrom(sources, options, tokenizerPath);
}

/**
 * Builds a {@linkcode Tokenizer} from already-parsed tokenizer files (for bundles, tests, or
 * files fetched over the network).
 *
 * @param sources the parsed `tokenizer.json` and optional companion files.
 * @param options chat template override.
 * @returns the tokenizer.
 * @throws {FormatError} when `tokenizer.json` is not a tokenizer `@huggingface/tokenizers` can build.
 *
 * @example
 * ```ts
 * import { createTokenizer } from "./tokenizer.ts";
 * const tok = createTokenizer({
 *   tokenizerJson: { model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] }, decoder: { type: "Fuse" } },
 *   tokenizerConfig: { chat_template: "{% for m in messages %}{{ m.content }};{% endfor %}" },
 * });
 * if (tok.encode("abab").join() !== "2,2") throw new Error("encode");
 * if (tok.applyChatTemplate([{ role: "user", content: "x" }]) !== "x;") throw new Error("template");
 * if (tok.padId !== undefined) throw new Error("no pad and no eos: pad id must be undefined");
 * ```
 */
export function createTokenizer(sources: TokenizerSources, options: LoadTokenizerOptions = {}): Tokenizer {
  return createTokenizerFrom(sources, options, "tokenizer.json");
}

function createTokenizerFrom(
  sources: TokenizerSources,
  options: LoadTokenizerOptions,
  file: string,
): Tokenizer {
  checkLoadOptions(options);
  const json = sources.tokenizerJson;
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError('expected a JSON object with a "model" field', { file });
  }
  if (!("model" in json) || typeof json.model !== "object" || json.model === null) {
    throw new FormatError('has no "model" object; is this an HF tokenizers tokenizer.json?', { file });
  }
  checkTokenizerJson(json as Record<string, unknown>, file);
  const config = sources.tokenizerConfig ?? {};
  // the companion file named in messages about the chat template and special tokens
  const configFile = sources.chatTemplateFile !== undefined && options.chatTemplate === undefined
    ? file.replace(/tokenizer\.json$/, "chat_template.jinja")
    : file.replace(/tokenizer\.json$/, "tokenizer_config.json");
  // tokenizers.js wants every pipeline key present; HF files omit null ones at times.
  const filled = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...json,
    added_tokens: (json as { added_tokens?: unknown }).added_tokens ?? [],
  };
  let hf: HfTokenizer;
  try {
    // transformers >= 4.45 defaults clean_up_tokenization_spaces to false; tokenizers.js to true,
    // which would break encode→decode round trips (" ." → "."), so pass it explicitly.
    hf = new HfTokenizer(filled, {
      ...config,
      clean_up_tokenization_spaces: config.clean_up_tokenization_spaces ?? false,
    });
  } catch (cause) {
    throw new FormatError(`could not be built by @huggingface/tokenizers: ${(cause as Error).message}`, {
      file,
      cause,
    });
  }
  const vocab = hf.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) vocabSize = Math.max(vocabSize, id + 1);

  const tokenToId = (token: string): number | undefined => {
    if (typeof token !== "string") {
      throw new TypeError(`tokenToId() needs a string, received ${typeof token}`);
    }
    return vocab.get(token);
  };
  const special = (name: string) => {
    const text = tokenText(config[name]) ?? tokenText(sources.specialTokensMap?.[name]);
    const id = text === undefined ? undefined : vocab.get(text);
    const genIds = idList(sources.generationConfig?.[`${name}_id`]);
    return { text: id === undefined && genIds.length > 0 ? hf.id_to_token(genIds[0]) : text, id, genIds };
  };
  const bos = special("bos_token");
  const eos = special("eos_token");
  const pad = special("pad_token");
  const bosId = bos.id ?? bos.genIds[0];
  const eosIds = [...new Set([...(eos.id === undefined ? [] : [eos.id]), ...eos.genIds])];
  const eosId = eosIds[0];
  const padId = pad.id ?? pad.genIds[0] ?? eosId;

  let chatTemplate: string | undefined;
  try {
    chatTemplate = options.chatTemplate ?? sources.chatTemplateFile ??
      resolveChatTemplate(config.chat_template, options.chatTemplateName);
  } catch (e) {
    (e as Error).message = `${configFile}: ${(e as Error).message}`;
    throw e;
  }
  let compiled: CompiledChatTemplate | undefined;
  const maxLen = config.model_max_length;

  return {
    vocabSize,
    bosId,
    eosId,
    eosIds,
    padId,
    bosToken: bos.text,
    eosToken: eos.text,
    modelMaxLength: typeof maxLen === "number" && Number.isFinite(maxLen) && maxLen < 1e15
      ? maxLen
      : undefined,
    chatTemplate,
    encode(text, encodeOptions = {}) {
      if (typeof text !== "string") throw new TypeError(`encode() needs a string, received ${typeof text}`);
      const { addSpecialTokens } = encodeSchema.parse(encodeOptions);
      try {
        return hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
      } catch (cause) {
        throw new FormatError(`@huggingface/tokenizers failed to encode: ${(cause as Error).message}`, {
          file,
          cause,
        });
      }
    },
    decode(ids, decodeOptions = {}) {
      if (!Array.isArray(ids)) throw new TypeError(`decode() needs an array of ids, received ${typeof ids}`);
      const { skipSpecialTokens } = decodeSchema.parse(decodeOptions);
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
          throw new RangeError(`decode() got token id ${id}; ids must be integers in [0, ${vocabSize})`);
        }
      }
      if (ids.length === 0) return "";
      try {
        return hf.decode(ids as number[], { skip_special_tokens: skipSpecialTokens });
      } catch (cause) {
        throw new FormatError(`@huggingface/tokenizers failed to decode: ${(cause as Error).message}`, {
          file,
          cause,
        });
      }
    },
    tokenToId,
    idToToken(id) {
      if (!Number.isInteger(id)) throw new TypeError(`idToToken() needs an integer id, received ${id}`);
      return hf.id_to_token(id);
    },
    applyChatTemplate(messages, templateOptions = {}) {
      const { addGenerationPrompt } = applyChatTemplateSchema.parse(templateOptions);
      if (chatTemplate === undefined) {
        throw new Error(
          `${file}: this tokenizer has no chat template (no chat_template in tokenizer_config.json ` +
            `and no chat_template.jinja); pass { chatTemplate } to loadTokenizer()`,
        );
      }
      try {
        compiled ??= compileChatTemplate(chatTemplate);
      } catch (e) {
        (e as Error).message = `${options.chatTemplate === undefined ? configFile : "chatTemplate"}: ${
          (e as Error).message
        }`;
        throw e;
      }
      try {
        return compiled(messages, {
          addGenerationPrompt,
          bosToken: bos.text ?? "",
          eosToken: eos.text ?? "",
        });
      } catch (e) {
        // a template that parses but fails on these messages: say which file holds it
        const where = options.chatTemplate === undefined ? configFile : "chatTemplate";
        if (!(e as Error).message.includes(where)) (e as Error).message = `${where}: ${(e as Error).message}`;
        throw e;
      }
    },
  };
}

/**
 * Checks the parts of `tokenizer.json` that @huggingface/tokenizers walks without checking (a wrong
 * type there surfaces as "Cannot read properties of undefined" from inside the library).
 */
function checkTokenizerJson(json: Record<string, unknown>, file: string): void {
  const fail = (detail: string): never => {
    throw new FormatError(detail, { file });
  };
  const show = (v: unknown) => Array.isArray(v) ? "an array" : v === null ? "null" : typeof v;
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  // A pipeline component: { type, ... } with nested Sequence lists and string options.
  const LISTS = ["normalizers", "pretokenizers", "processors", "decoders"];
  const STRINGS = ["behavior", "content", "prepend", "prefix", "replacement", "suffix", "unk_token"];
  const component = (v: unknown, at: string): void => {
    if (!isObject(v)) fail(`"${at}" must be an object, got ${show(v)}`);
    const c = v as Record<string, unknown>;
    if (typeof c.type !== "string") fail(`"${at}.type" must be a string, got ${show(c.type)}`);
    for (const k of LISTS) {
      if (!(k in c)) continue;
      if (!Array.isArray(c[k])) fail(`"${at}.${k}" must be an array, got ${show(c[k])}`);
      (c[k] as unknown[]).forEach((x, i) => component(x, `${at}.${k}[${i}]`));
    }
    for (const k of STRINGS) {
      if (c[k] !== undefined && c[k] !== null && typeof c[k] !== "string") {
        fail(`"${at}.${k}" must be a string, got ${show(c[k])}`);
      }
    }
    if (c.pattern !== undefined && typeof c.pattern !== "string" && !isObject(c.pattern)) {
      fail(`"${at}.pattern" must be a string or { String | Regex }, got ${show(c.pattern)}`);
    }
  };
  for (const key of ["normalizer", "pre_tokenizer", "post_processor", "decoder"]) {
    if (json[key] !== undefined && json[key] !== null) component(json[key], key);
  }
  const added = json.added_tokens;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) fail(`"added_tokens" must be an array, got ${show(added)}`);
    (added as unknown[]).forEach((t, i) => {
      if (
        !isObject(t) || !Number.isSafeInteger(t.id) || (t.id as number) < 0 || typeof t.content !== "string"
      ) {
        fail(`"added_tokens[${i}]" must be an object with an integer "id" >= 0 and a string "content"`);
      }
    });
  }
  const model = json.model as Record<string, unknown>;
  if (model.type !== undefined && typeof model.type !== "string") {
    fail(`"model.type" must be a string, got ${show(model.type)}`);
  }
  const vocab = model.vocab;
  if (vocab === undefined || vocab === null) {
    fail(`"model.vocab" is missing; a tokenizer model needs its vocabulary`);
  }
  if (isObject(vocab)) {
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isSafeInteger(id) || (id as number) < 0) {
        fail(
          `"model.vocab" maps ${JSON.stringify(token.slice(0, 40))} to ${
            JSON.stringify(id)
          }; ids are integers >= 0`,
        );
      }
    }
  } else if (vocab !== undefined && !Array.isArray(vocab)) {
    fail(`"model.vocab" must be an object (BPE, WordPiece) or an array (Unigram), got ${show(vocab)}`);
  }
  const merges = model.merges;
  if (merges !== undefined) {
    if (!Array.isArray(merges)) fail(`"model.merges" must be an array, got ${show(merges)}`);
    (merges as unknown[]).forEach((m, i) => {
      const pair = Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === "string");
      if (typeof m !== "string" && !pair) {
        fail(`"model.merges[${i}]" must be "a b" or ["a", "b"], got ${JSON.stringify(m)?.slice(0, 60)}`);
      }
    });
  }
}

/** `"<s>"` or `{content: "<s>", ...}` (AddedToken form) → `"<s>"`. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (
    typeof value === "object" && value !== null &&
    typeof (value as { content?: unknown }).content === "string"
  ) {
    return (value as { content: string }).content;
  }
  return undefined;
}

function idList(value: unknown): number[] {
  if (Number.isInteger(value)) return [value as number];
  if (Array.isArray(value)) return value.filter((v) => Number.isInteger(v));
  return [];
}

function checkLoadOptions(options: LoadTokenizerOptions): void {
  loadTokenizerSchema.parse(options);
}

function parseJsonObject(text: string, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new FormatError(`is not valid JSON (${(cause as Error).message})`, { file, cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FormatError("expected a JSON object", { file });
  }
  return value as Record<string, unknown>;
}

async function readOptionalText(file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return undefined;
    throw cause;
  }
}

async function readOptionalJson(file: string): Promise<Record<string, unknown> | undefined> {
  const text = await readOptionalText(file);
  return text === undefined ? undefined : parseJsonObject(text, file);
}

/**
 * Trains a small GPT-2-style byte-level BPE tokenizer on a text file and writes it in the HF
 * format (`tokenizer.json` + `tokenizer_config.json`), loadable by `loadTokenizer()` and by
 * transformers' `PreTrainedTokenizerFast`.
 *
 * ```sh
 * deno run -A scripts/train_tokenizer.ts --input corpus.txt --out out/tok --vocab 512
 * ```
 *
 * Algorithm (Sennrich et al. 2016, as in HF `tokenizers`' `BpeTrainer`): split the text with
 * the GPT-2 regex, count the distinct pieces, map each piece's UTF-8 bytes to GPT-2's printable
 * byte alphabet, then repeatedly merge the most frequent adjacent pair over the table of
 * distinct pieces (not over the raw text), updating only the pieces that contain it.
 * Every byte is in the vocabulary, so any well-formed Unicode text round-trips exactly.
 * @module
 */
import { CliUsageError, defineCli, runCli } from "./_cli.ts";
import { defineOptions, type FieldsOf, integer } from "../lib/options/schema.ts";

/** Options of {@linkcode trainByteLevelBpe}. */
export interface TrainByteLevelBpeOptions {
  /**
   * Final vocabulary size: 3 special tokens + 256 bytes + merges (fewer when the text runs out of pairs).
   * @default 512
   */
  vocabSize?: number;
  /**
   * Pairs seen fewer times than this are never merged.
   * @default 2
   */
  minFrequency?: number;
  /**
   * `model_max_length` written to `tokenizer_config.json`.
   * @default 2048
   */
  modelMaxLength?: number;
}

/** The two files of a trained tokenizer, as JSON values (same shape as `TokenizerSources`). */
export interface TrainedTokenizer {
  /** Contents of `tokenizer.json`. */
  tokenizerJson: Record<string, unknown>;
  /** Contents of `tokenizer_config.json`. */
  tokenizerConfig: Record<string, unknown>;
}

/** Special tokens, at ids 0, 1, 2. */
export const SPECIAL_TOKENS = ["<s>", "</s>", "<pad>"] as const;

/**
 * The chat template written to `tokenizer_config.json`:
 * `<s>### User:\n{user}\n### Assistant:\n{assistant}</s>`, with an optional `### System:` turn.
 */
export const INSTRUCT_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}" +
  "{% if message['role'] == 'system' %}{{ '### System:\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'user' %}{{ '### User:\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'assistant' %}{{ '### Assistant:\\n' + message['content'] + eos_token }}" +
  "{% else %}{{ raise_exception('Unknown role: ' + message['role']) }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}";

// GPT-2's pre-tokenizer regex (identical in HF tokenizers' ByteLevel and in tokenizers.js).
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const PAIR_SHIFT = 2 ** 21; // pair key = left * 2^21 + right; ids stay far below 2^21

/** The schema of {@linkcode trainByteLevelBpe}'s options. */
export const trainByteLevelBpeSchema = defineOptions(
  "trainByteLevelBpe",
  {
    vocabSize: integer("Final vocabulary size: 3 special tokens + 256 bytes + merges.", {
      min: SPECIAL_TOKENS.length + 256,
      below: PAIR_SHIFT,
      default: 512,
    }),
    minFrequency: integer("Pairs seen fewer times than this are never merged.", { min: 1, default: 2 }),
    modelMaxLength: integer("model_max_length written to tokenizer_config.json.", { min: 1, default: 2048 }),
  } satisfies FieldsOf<TrainByteLevelBpeOptions>,
);

/**
 * Trains a byte-level BPE on `text`.
 *
 * @param text the training corpus.
 * @param options vocabulary size, minimum pair frequency, model max length.
 * @returns the `tokenizer.json` and `tokenizer_config.json` contents.
 *
 * @example
 * ```ts
 * import { trainByteLevelBpe } from "./train_tokenizer.ts";
 * import { createTokenizer } from "../lib/io/tokenizer.ts";
 * const trained = trainByteLevelBpe("the cat and the hat and the bat ".repeat(20), { vocabSize: 270 });
 * const tok = createTokenizer(trained);
 * const ids = tok.encode("the hat, é!", { addSpecialTokens: true });
 * if (ids[0] !== tok.bosId || tok.bosId !== 0 || tok.eosId !== 1 || tok.padId !== 2) throw new Error("specials");
 * if (tok.decode(ids, { skipSpecialTokens: true }) !== "the hat, é!") throw new Error("round trip");
 * if (tok.encode(" the", { addSpecialTokens: false }).length !== 1) throw new Error("merges not applied");
 * ```
 */
export function trainByteLevelBpe(text: string, options: TrainByteLevelBpeOptions = {}): TrainedTokenizer {
  if (typeof text !== "string") {
    throw new TypeError(`trainByteLevelBpe() needs a string, received ${typeof text}`);
  }
  const { vocabSize, minFrequency, modelMaxLength } = resolveOptions(options);

  // Alphabet: specials, then the 256 bytes as GPT-2's printable characters.
  const byteChars = bytesToUnicode();
  const tokens: string[] = [...SPECIAL_TOKENS, ...byteChars];
  const byteBase = SPECIAL_TOKENS.length;
  const tokenIds = new Map(tokens.map((token, id) => [token, id]));

  // Distinct pre-tokenized pieces with their counts, as byte-symbol id arrays.
  const counts = new Map<string, number>();
  for (const piece of text.match(GPT2_SPLIT) ?? []) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  const encoder = new TextEncoder();
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [piece, count] of counts) {
    words.push(Array.from(encoder.encode(piece), (b) => byteBase + b));
    freqs.push(count);
  }

  // Pair statistics over the word table.
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  words.forEach((word, w) => addPairs(word, freqs[w], w, pairCount, pairWords));
  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push(count, key);

  const merges: [string, string][] = [];
  while (tokens.length < vocabSize) {
    const top = popValid(heap, pairCount);
    if (top === undefined || top.count < minFrequency) break;
    const left = Math.floor(top.key / PAIR_SHIFT);
    const right = top.key % PAIR_SHIFT;
    // Different merge paths can spell the same string ("ab"+"c", "a"+"bc"): one id per string.
    const spelled = tokens[left] + tokens[right];
    let merged = tokenIds.get(spelled);
    if (merged === undefined) {
      merged = tokens.length;
      tokens.push(spelled);
      tokenIds.set(spelled, merged);
    }
    merges.push([tokens[left], tokens[right]]);
    const touched = new Set<number>();
    for (const w of pairWords.get(top.key) ?? []) {
      const word = words[w];
      removePairs(word, freqs[w], pairCount, touched);
      words[w] = mergeWord(word, left, right, merged);
      addPairs(words[w], freqs[w], w, pairCount, pairWords, touched);
    }
    pairWords.delete(top.key);
    for (const key of touched) {
      const count = pairCount.get(key) ?? 0;
      if (count > 0) heap.push(count, key);
    }
  }
  return { tokenizerJson: tokenizerJson(tokens, merges), tokenizerConfig: tokenizerConfig(modelMaxLength) };
}

/**
 * Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed).
 *
 * @param dir output directory.
 * @param trained the result of {@linkcode trainByteLevelBpe}.
 *
 * @example
 * ```ts
 * import { trainByteLevelBpe, writeTokenizerFiles } from "./train_tokenizer.ts";
 * import { loadTokenizer } from "../lib/io/tokenizer.ts";
 * const dir = await Deno.makeTempDir();
 * await writeTokenizerFiles(dir, trainByteLevelBpe("abc abc abc abd abd", { vocabSize: 262 }));
 * const tok = await loadTokenizer(dir);
 * if (tok.vocabSize !== 262 || tok.decode(tok.encode("abc abd")) !== "<s>abc abd") throw new Error("reload");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeTokenizerFiles(dir: string, trained: TrainedTokenizer): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(trained.tokenizerJson, null, 2) + "\n");
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify(trained.tokenizerConfig, null, 2) + "\n",
  );
}

function resolveOptions(options: TrainByteLevelBpeOptions): Required<TrainByteLevelBpeOptions> {
  return trainByteLevelBpeSchema.parse(options);
}

/** GPT-2 `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 onwards. */
function bytesToUnicode(): string[] {
  const chars: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    chars[b] = String.fromCodePoint(printable ? b : next++);
  }
  return chars;
}

function addPairs(
  word: number[],
  freq: number,
  w: number,
  pairCount: Map<number, number>,
  pairWords: Map<number, Set<number>>,
  touched?: Set<number>,
): void {
  for (let i = 0; i + 1 < word.length; i++) {
    const key = word[i] * PAIR_SHIFT + word[i + 1];
    pairCount.set(key, (pairCount.get(key) ?? 0) + freq);
    let set = pairWords.get(key);
    if (set === undefined) pairWords.set(key, set = new Set());
    set.add(w);
    touched?.add(key);
  }
}

// A word's stale entries in pairWords are harmless: mergeWord on a word without the pair is a no-op.
function removePairs(
  word: number[],
  freq: number,
  pairCount: Map<number, number>,
  touched: Set<number>,
): void {
  for (let i = 0; i + 1 < word.length; i++) {
    const key = word[i] * PAIR_SHIFT + word[i + 1];
    pairCount.set(key, (pairCount.get(key) ?? 0) - freq);
    touched.add(key);
  }
}

/** Replaces non-overlapping (left, right) pairs, scanning left to right as BPE encoding does. */
function mergeWord(word: number[], left: number, right: number, merged: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < word.length; i++) {
    if (i + 1 < word.length && word[i] === left && word[i + 1] === right) {
      out.push(merged);
      i++;
    } else {
      out.push(word[i]);
    }
  }
  return out;
}

function popValid(
  heap: PairHeap,
  pairCount: Map<number, number>,
): { count: number; key: number } | undefined {
  for (let top = heap.pop(); top !== undefined; top = heap.pop()) {
    if (pairCount.get(top.key) === top.count) return top; // otherwise a stale entry
  }
  return undefined;
}

/** Max-heap of (count, pair key); ties go to the smaller key so training is deterministic. */
class PairHeap {
  #counts: number[] = [];
  #keys: number[] = [];

  push(count: number, key: number): void {
    this.#counts.push(count);
    this.#keys.push(key);
    let i = this.#counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } | undefined {
    const n = this.#counts.length;
    if (n === 0) return undefined;
    const top = { count: this.#counts[0], key: this.#keys[0] };
    this.#swap(0, n - 1);
    this.#counts.pop();
    this.#keys.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let best = i;
      if (l < n - 1 && this.#above(l, best)) best = l;
      if (r < n - 1 && this.#above(r, best)) best = r;
      if (best === i) break;
      this.#swap(i, best);
      i = best;
    }
    return top;
  }

  #above(a: number, b: number): boolean {
    const ca = this.#counts[a], cb = this.#counts[b];
    return ca > cb || (ca === cb && this.#keys[a] < this.#keys[b]);
  }

  #swap(a: number, b: number): void {
    [this.#counts[a], this.#counts[b]] = [this.#counts[b], this.#counts[a]];
    [this.#keys[a], this.#keys[b]] = [this.#keys[b], this.#keys[a]];
  }
}

function tokenizerJson(tokens: string[], merges: [string, string][]): Record<string, unknown> {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const bos = SPECIAL_TOKENS[0];
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    // Like HF Llama tokenizers: bos is added by a TemplateProcessing post-processor.
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [0], tokens: [bos] } },
    },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(tokens.map((token, id) => [token, id])),
      merges,
    },
  };
}

function tokenizerConfig(modelMaxLength: number): Record<string, unknown> {
  const [bos, eos, pad] = SPECIAL_TOKENS;
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(SPECIAL_TOKENS.map((content, id) => [String(id), {
      content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    }])),
    bos_token: bos,
    eos_token: eos,
    pad_token: pad,
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    tokenizer_class: "PreTrainedTokenizerFast",
    chat_template: INSTRUCT_CHAT_TEMPLATE,
  };
}

const TOKENIZER_CLI = defineCli({
  name: "train_tokenizer",
  summary: "Trains a byte-level BPE tokenizer on a text file and writes tokenizer.json and " +
    "tokenizer_config.json (HF format) into a folder.",
  usage: "deno run -A scripts/train_tokenizer.ts --input <file.txt> --out <dir> [options]",
  options: {
    input: {
      type: "string",
      placeholder: "FILE",
      description: "training text (required)",
      example: "--input corpus.txt",
    },
    out: {
      type: "string",
      placeholder: "DIR",
      description: "output folder (required)",
      example: "--out out/tok",
    },
    vocab: {
      type: "integer",
      default: 512,
      min: 259,
      api: "vocabSize",
      description: "vocabulary size",
      example: "--vocab 1024",
    },
    "min-frequency": {
      type: "integer",
      default: 2,
      min: 1,
      api: "minFrequency",
      description: "pairs seen fewer times are never merged",
      example: "--min-frequency 3",
    },
    "max-length": {
      type: "integer",
      default: 2048,
      min: 1,
      api: "modelMaxLength",
      description: "model_max_length written to tokenizer_config.json",
      example: "--max-length 512",
    },
  },
  examples: [
    "deno run -A scripts/train_tokenizer.ts --input notebooks/data/tinyshakespeare.txt --out out/tok --vocab 512",
  ],
});

/**
 * Trains a tokenizer on the text in `input` and writes it into `out`; returns a one-line summary.
 *
 * @param input path of the training text
 * @param out output folder
 * @param options vocabulary size, minimum pair frequency, model max length
 * @returns what was written
 * @example
 * ```ts
 * import { trainTokenizerFile } from "./train_tokenizer.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/c.txt`, "abc abc abd abd ".repeat(4));
 * const line = await trainTokenizerFile(`${dir}/c.txt`, `${dir}/tok`, { vocabSize: 262 });
 * if (!line.includes("tokenizer.json")) throw new Error(line);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function trainTokenizerFile(
  input: string,
  out: string,
  options: TrainByteLevelBpeOptions = {},
): Promise<string> {
  const started = performance.now();
  const text = await Deno.readTextFile(input);
  const trained = trainByteLevelBpe(text, options);
  await writeTokenizerFiles(out, trained);
  const model = trained.tokenizerJson.model as { vocab: Record<string, number>; merges: unknown[] };
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  return `Trained ${
    Object.keys(model.vocab).length
  } tokens (${model.merges.length} merges) on ${text.length} ` +
    `characters in ${seconds} s; wrote ${out}/tokenizer.json and ${out}/tokenizer_config.json`;
}

if (import.meta.main) {
  await runCli(TOKENIZER_CLI, async ({ values: v }) => {
    if (v.input === undefined || v.out === undefined) {
      throw new CliUsageError("needs --input FILE and --out DIR");
    }
    const options = { vocabSize: v.vocab, minFrequency: v["min-frequency"], modelMaxLength: v["max-length"] };
    console.log(await trainTokenizerFile(v.input, v.out, options));
  });
}

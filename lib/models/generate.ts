/**
 * Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p), repetition
 * penalty, stop strings, a token budget, streaming through `onToken`, batched prompts (left
 * padded; RoPE scores depend only on relative positions, so a row's padding does not change it),
 * and {@linkcode chat} through the tokenizer's chat template.
 * @module
 */
import { requireSyncReads } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Tokenizer } from "../io/tokenizer.ts";
import type { ChatMessage } from "../io/chat_template.ts";
import { createCache, disposeCache, type LlamaForCausalLM } from "./llama.ts";
import { mulberry32 } from "../engine/random.ts";
import {
  array,
  boolean,
  custom,
  defineOptions,
  type FieldsOf,
  integer,
  number,
  string,
} from "../options/schema.ts";

/** What {@linkcode GenerateOptions.onToken} receives with each piece of text. */
export interface TokenEvent {
  /** The token id just produced. */
  id: number;
  /** Its position in the completion (0-based). */
  index: number;
  /** Which prompt of a batch it belongs to (0 for a single prompt). */
  row: number;
}

/** Options for {@linkcode generate}. */
export interface GenerateOptions {
  /** Most tokens to produce. @default {64} */
  maxNewTokens?: number;
  /** 0 = greedy; otherwise softmax temperature for sampling. @default {0} */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 = all). @default {0} */
  topK?: number;
  /** Sample only among the most likely tokens whose probabilities add up to p (nucleus; 1 = all). @default {1} */
  topP?: number;
  /**
   * Penalty on tokens already in the prompt or the completion (Transformers' `repetition_penalty`:
   * a positive logit is divided by it, a negative one multiplied; 1 = off). @default {1}
   */
  repetitionPenalty?: number;
  /** Seed for sampling. @default {0} */
  seed?: number;
  /** Stop when the completion contains one of these strings (it is cut there). @default {[]} */
  stop?: string[];
  /** Prepend the bos token to the prompt. @default {true} */
  addBos?: boolean;
  /**
   * Streaming: called with each new piece of the completion's text as it is decoded (text that may
   * still turn into a stop string or an incomplete character is held back until it is certain), so
   * the pieces joined equal the returned text.
   */
  onToken?: (text: string, event: TokenEvent) => void;
}

/** The schema of {@linkcode generate}'s options. */
export const generateSchema = defineOptions(
  "generate",
  {
    maxNewTokens: integer("Most tokens to produce.", { min: 1, default: 64 }),
    temperature: number("0 = greedy; otherwise softmax temperature for sampling.", { min: 0, default: 0 }),
    topK: integer("Sample only among the k most likely tokens (0 = all).", { min: 0, default: 0 }),
    topP: number("Nucleus sampling: the most likely tokens whose probabilities add up to p (1 = all).", {
      above: 0,
      max: 1,
      default: 1,
    }),
    repetitionPenalty: number("Penalty on tokens already seen (Transformers' repetition_penalty; 1 = off).", {
      above: 0,
      default: 1,
    }),
    seed: integer("Seed for sampling.", { min: 0, default: 0 }),
    stop: array(
      "Stop when the completion contains one of these strings (it is cut there).",
      string("A stop string.", {
        nonEmpty: true,
      }),
      { default: [] },
    ),
    addBos: boolean("Prepend the bos token to the prompt.", { default: true }),
    onToken: custom<(text: string, event: TokenEvent) => void>(
      "Streaming: called with each new piece of the completion's text.",
      "a function",
      (v) => typeof v === "function",
      { example: () => {} },
    ),
  } satisfies FieldsOf<GenerateOptions>,
  {
    renamed: {
      maxTokens: "maxNewTokens",
      max_new_tokens: "maxNewTokens",
      top_k: "topK",
      top_p: "topP",
      repetition_penalty: "repetitionPenalty",
      stopStrings: "stop",
      streamer: "onToken",
    },
  },
);

/**
 * Applies Transformers' repetition penalty in place to the logits of every id in `seen`.
 *
 * @example
 * ```ts
 * import { applyRepetitionPenalty } from "./generate.ts";
 * const l = new Float32Array([2, -2, 1]);
 * applyRepetitionPenalty(l, new Set([0, 1]), 2);
 * if (l.join() !== "1,-4,1") throw new Error(l.join());
 * ```
 */
export function applyRepetitionPenalty(
  logits: Float32Array,
  seen: ReadonlySet<number>,
  penalty: number,
): void {
  if (penalty === 1) return;
  for (const id of seen) logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
}

/**
 * Picks the next token id from last-position logits: argmax when `temperature` is 0, else a
 * sample from softmax(logits / temperature) restricted to the `topK` most likely tokens (0 = all)
 * and then to the smallest set whose probabilities reach `topP` (1 = all).
 *
 * @example
 * ```ts
 * import { pickToken } from "./generate.ts";
 * const logits = new Float32Array([0, 3, 2.9, -5]);
 * if (pickToken(logits, 0, 0, Math.random) !== 1) throw new Error("greedy");
 * // top-p 0.5 keeps only the most likely token.
 * for (let i = 0; i < 20; i++) if (pickToken(logits, 1, 0, Math.random, 0.5) !== 1) throw new Error("top-p");
 * ```
 */
export function pickToken(
  logits: Float32Array,
  temperature: number,
  topK: number,
  rand: () => number,
  topP = 1,
): number {
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = Array.from(logits.keys());
  if ((topK > 0 && topK < idx.length) || topP < 1) idx.sort((a, b) => logits[b] - logits[a]);
  if (topK > 0 && topK < idx.length) idx = idx.slice(0, topK);
  const max = Math.max(...idx.map((i) => logits[i]));
  let w = idx.map((i) => Math.exp((logits[i] - max) / temperature));
  if (topP < 1) {
    const total = w.reduce((s, x) => s + x, 0);
    let acc = 0, keep = 0;
    while (keep < w.length && acc < topP * total) acc += w[keep++];
    idx = idx.slice(0, Math.max(1, keep));
    w = w.slice(0, idx.length);
  }
  let r = rand() * w.reduce((s, x) => s + x, 0);
  for (let j = 0; j < idx.length; j++) if ((r -= w[j]) <= 0) return idx[j];
  return idx[idx.length - 1];
}

/** The completion text cut at the first stop string. */
function cutAtStop(text: string, stop: readonly string[]): string {
  for (const s of stop) {
    const at = text.indexOf(s);
    if (at >= 0) text = text.slice(0, at);
  }
  return text;
}

/** How much of `text` is certain: not a possible start of a stop string, no dangling U+FFFD. */
function settled(text: string, stop: readonly string[]): number {
  let end = text.length;
  while (end > 0 && text[end - 1] === "\uFFFD") end--;
  for (const s of stop) {
    for (let k = Math.min(s.length - 1, end); k > 0; k--) {
      if (text.endsWith(s.slice(0, k), end)) {
        end = Math.min(end, end - k);
        break;
      }
    }
  }
  return end;
}

/**
 * Continues `prompt` (or each prompt of an array, in one batch) and returns the completion text
 * (prompt excluded). Stops at an eos token, a stop string, `maxNewTokens`, or when prompt and
 * completion fill the model's context (`max_position_embeddings`, capped by a sliding window): a
 * prompt of P tokens gets at most `max_position_embeddings - P + 1` new tokens. A prompt longer than
 * the context is refused with a `RangeError` giving its token count and the limit (nothing is cut
 * silently: shorten the prompt, or keep its end yourself, e.g. by dropping early chat turns).
 *
 * @example
 * ```ts
 * import { generate } from "./generate.ts";
 * import { loadModel } from "./load_model.ts";
 * import { loadTokenizer } from "../io/tokenizer.ts";
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine();
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
 * const pieces: string[] = [];
 * const a = generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8, onToken: (t) => pieces.push(t) });
 * if (a !== generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 })) throw new Error("greedy is deterministic");
 * if (pieces.join("") !== a) throw new Error("streamed pieces spell the completion");
 * const [b] = generate(model, tokenizer, ["ROMEO:\n", "JULIET:\n"], { maxNewTokens: 8 });
 * if (b !== a) throw new Error("a batch row equals its single generation");
 * model.dispose();
 * ```
 */
export function generate(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  prompt: string,
  options?: GenerateOptions,
): string;
export function generate(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  prompts: string[],
  options?: GenerateOptions,
): string[];
export function generate(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  prompt: string | string[],
  options: GenerateOptions = {},
): string | string[] {
  const o = generateSchema.parse(options);
  requireSyncReads("generate() (use `await generateAsync()`)");
  const texts = readEachSync(generateFromIds(model, tokenizer, promptIdsOf(tokenizer, prompt, o), o));
  return Array.isArray(prompt) ? texts : texts[0];
}

/**
 * {@linkcode generate} without synchronous reads, for every backend (webgpu included):
 * each step's last-position logits are read with one `await data()`. Same tokens as
 * `generate` for the same options and seed.
 *
 * @example
 * ```ts
 * import { generate, generateAsync } from "./generate.ts";
 * import { loadModel } from "./load_model.ts";
 * import { loadTokenizer } from "../io/tokenizer.ts";
 * import { EMBEDDED_MODEL_DIR } from "./embedded.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine();
 * const model = await loadModel(EMBEDDED_MODEL_DIR);
 * const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
 * const a = await generateAsync(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 });
 * if (a !== generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 })) throw new Error("same tokens");
 * model.dispose();
 * ```
 */
export async function generateAsync<P extends string | string[]>(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  prompt: P,
  options: GenerateOptions = {},
): Promise<P extends string ? string : string[]> {
  const o = generateSchema.parse(options);
  const steps = generateFromIds(model, tokenizer, promptIdsOf(tokenizer, prompt, o), o);
  let r = steps.next();
  try {
    while (!r.done) {
      const t = r.value;
      let values: Float32Array;
      try {
        values = await t.data() as Float32Array;
      } finally {
        t.dispose();
      }
      r = steps.next(values);
    }
  } finally {
    steps.return([]); // frees the KV cache when a read failed (a no-op once done)
  }
  return (Array.isArray(prompt) ? r.value : r.value[0]) as P extends string ? string : string[];
}

/** Token ids of each prompt (with bos when asked), checking the prompt's type. */
function promptIdsOf(tokenizer: Tokenizer, prompt: string | string[], o: ParsedGenerate): number[][] {
  const prompts = Array.isArray(prompt) ? prompt : [prompt];
  if (prompts.length === 0 || prompts.some((p) => typeof p !== "string")) {
    throw new TypeError("generate: the prompt must be a string or a non-empty array of strings");
  }
  const bos = o.addBos && tokenizer.bosId !== undefined ? [tokenizer.bosId] : [];
  return prompts.map((p) => [...bos, ...tokenizer.encode(p, { addSpecialTokens: false })]);
}

/** Drives a decoding loop with synchronous reads: each yielded tensor is read and freed. */
function readEachSync<R>(steps: Generator<tf.Tensor, R, Float32Array>): R {
  let r = steps.next();
  try {
    while (!r.done) {
      const t = r.value;
      let values: Float32Array;
      try {
        values = t.dataSync() as Float32Array;
      } finally {
        t.dispose();
      }
      r = steps.next(values);
    }
  } finally {
    steps.return(undefined as R); // frees the KV cache when a read failed (a no-op once done)
  }
  return r.value;
}

type ParsedGenerate = ReturnType<typeof generateSchema.parse>;

/**
 * The decoding loop over a batch of prompt ids (left-padded when their lengths differ). It
 * yields each step's last-position logits `[B, 1, V]` and is sent back their values, so
 * that the sync and async drivers share it; the driver frees the yielded tensor.
 */
function* generateFromIds(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  promptIds: number[][],
  o: ParsedGenerate,
): Generator<tf.Tensor, string[], Float32Array> {
  const B = promptIds.length;
  const rand = mulberry32(o.seed);
  const stop = o.stop;
  const maxPos = model.config.maxPositionEmbeddings;
  const eos = new Set(tokenizer.eosIds);
  const pad = tokenizer.padId ?? tokenizer.eosId ?? 0;
  const longest = Math.max(...promptIds.map((p) => p.length));
  if (longest > maxPos) {
    const row = promptIds.findIndex((p) => p.length === longest);
    throw new RangeError(
      `generate: ${B > 1 ? `prompt ${row}` : "the prompt"} is ${longest} tokens but the model's context ` +
        `(max_position_embeddings${
          model.config.raw.sliding_window ? " or sliding_window" : ""
        }) is ${maxPos}: shorten it to at most ${maxPos} tokens (fewer leave room for the reply); ` +
        "nothing was generated",
    );
  }
  const padded = B > 1 || promptIds[0].length !== longest;
  // Attention mask over every position so far (1 = real token), only needed with padding.
  const mask = promptIds.map((p) => [...Array(longest - p.length).fill(0), ...Array(p.length).fill(1)]);
  const seen = promptIds.map((p) => new Set(p));
  const out: number[][] = promptIds.map(() => []);
  const done = promptIds.map(() => false);
  const emitted = promptIds.map(() => 0);
  const stream = (row: number, final: boolean) => {
    if (!o.onToken) return;
    const text = cutAtStop(tokenizer.decode(out[row], { skipSpecialTokens: true }), stop);
    const end = final ? text.length : settled(text, stop);
    if (end > emitted[row]) {
      o.onToken(text.slice(emitted[row], end), {
        id: out[row][out[row].length - 1],
        index: out[row].length - 1,
        row,
      });
      emitted[row] = end;
    }
  };
  const cache = createCache(model);
  try {
    let next = promptIds.map((p) => [...Array(longest - p.length).fill(pad), ...p]);
    for (let i = 0; i < o.maxNewTokens && cache.length + next[0].length <= maxPos; i++) {
      const last: Float32Array = yield tf.tidy(() => {
        const logits = model.forward(next, { cache, ...(padded ? { attentionMask: mask } : {}) }); // [B, T, V]
        const [, T, V] = logits.shape;
        return tf.slice(logits, [0, T - 1, 0], [B, 1, V]);
      });
      const V = last.length / B;
      const step: number[] = [];
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          step.push(pad);
          continue;
        }
        const row = last.slice(b * V, (b + 1) * V);
        applyRepetitionPenalty(row, seen[b], o.repetitionPenalty);
        const id = pickToken(row, o.temperature, o.topK, rand, o.topP);
        step.push(id);
        if (eos.has(id)) {
          done[b] = true;
          continue;
        }
        out[b].push(id);
        seen[b].add(id);
        if (stop.length && stop.some((s) => tokenizer.decode(out[b]).includes(s))) done[b] = true;
        stream(b, false);
      }
      if (done.every((d) => d)) break;
      for (let b = 0; b < B; b++) mask[b].push(1);
      next = step.map((id) => [id]);
    }
  } finally {
    disposeCache(cache);
  }
  return out.map((ids, row) => {
    stream(row, true);
    return cutAtStop(tokenizer.decode(ids, { skipSpecialTokens: true }), stop);
  });
}

/**
 * Answers a conversation: renders `messages` with the tokenizer's chat template (with the
 * assistant's generation prompt, as Transformers' `apply_chat_template(add_generation_prompt=True)`)
 * and generates the reply (the template supplies bos, so none is added). Stops at eos or the
 * template's end-of-turn token when it is an eos id of the tokenizer or the generation config.
 *
 * @example
 * ```ts
 * import { chat } from "./generate.ts";
 * import { createTokenizer } from "../io/tokenizer.ts";
 * import { initModel } from "./init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const tok = createTokenizer({
 *   tokenizerJson: { model: { type: "BPE", vocab: { a: 0, b: 1, "</s>": 2 }, merges: [] },
 *     added_tokens: [{ id: 2, content: "</s>", special: true }] },
 *   tokenizerConfig: { eos_token: "</s>", chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}" },
 * });
 * const m = initModel({ model_type: "qwen2", vocab_size: 3, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, { seed: 1 });
 * const reply = chat(m, tok, [{ role: "user", content: "ab" }], { maxNewTokens: 3 });
 * if (typeof reply !== "string" || /[^ab ]/.test(reply)) throw new Error(JSON.stringify(reply));
 * m.dispose();
 * ```
 */
export function chat(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  options: GenerateOptions = {},
): string {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new TypeError("chat: messages must be a non-empty array of { role, content }");
  }
  const prompt = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  return generate(model, tokenizer, prompt, { addBos: false, ...options });
}

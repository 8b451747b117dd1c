/**
 * Text generation with a KV cache (greedy or sampled).
 * @module
 */
import { requireSyncReads } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Tokenizer } from "../io/tokenizer.ts";
import { createCache, disposeCache, type LlamaForCausalLM } from "./llama.ts";
import { mulberry32 } from "../engine/random.ts";
import { array, boolean, defineOptions, type FieldsOf, integer, number, string } from "../options/schema.ts";

/** Options for {@linkcode generate}. */
export interface GenerateOptions {
  /** Most tokens to produce. @default {64} */
  maxNewTokens?: number;
  /** 0 = greedy; otherwise softmax temperature for sampling. @default {0} */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 = all). @default {0} */
  topK?: number;
  /** Seed for sampling. @default {0} */
  seed?: number;
  /** Stop when the completion contains one of these strings (it is cut there). @default {[]} */
  stop?: string[];
  /** Prepend the bos token to the prompt. @default {true} */
  addBos?: boolean;
}

/** The schema of {@linkcode generate}'s options. */
export const generateSchema = defineOptions(
  "generate",
  {
    maxNewTokens: integer("Most tokens to produce.", { min: 1, default: 64 }),
    temperature: number("0 = greedy; otherwise softmax temperature for sampling.", { min: 0, default: 0 }),
    topK: integer("Sample only among the k most likely tokens (0 = all).", { min: 0, default: 0 }),
    seed: integer("Seed for sampling.", { min: 0, default: 0 }),
    stop: array(
      "Stop when the completion contains one of these strings (it is cut there).",
      string("A stop string.", {
        nonEmpty: true,
      }),
      { default: [] },
    ),
    addBos: boolean("Prepend the bos token to the prompt.", { default: true }),
  } satisfies FieldsOf<GenerateOptions>,
  {
    renamed: {
      maxTokens: "maxNewTokens",
      max_new_tokens: "maxNewTokens",
      top_k: "topK",
      stopStrings: "stop",
    },
  },
);

/** Picks the next token id from last-position logits. */
export function pickToken(
  logits: Float32Array,
  temperature: number,
  topK: number,
  rand: () => number,
): number {
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = Array.from(logits.keys());
  if (topK > 0 && topK < idx.length) idx = idx.sort((a, b) => logits[b] - logits[a]).slice(0, topK);
  const max = Math.max(...idx.map((i) => logits[i]));
  const w = idx.map((i) => Math.exp((logits[i] - max) / temperature));
  let r = rand() * w.reduce((s, x) => s + x, 0);
  for (let j = 0; j < idx.length; j++) if ((r -= w[j]) <= 0) return idx[j];
  return idx[idx.length - 1];
}

/**
 * Continues `prompt` and returns the completion text (prompt excluded).
 * Stops at an eos token, a stop string or `maxNewTokens`.
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
 * const a = generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 });
 * if (a !== generate(model, tokenizer, "ROMEO:\n", { maxNewTokens: 8 })) throw new Error("greedy is deterministic");
 * model.dispose();
 * ```
 */
export function generate(
  model: LlamaForCausalLM,
  tokenizer: Tokenizer,
  prompt: string,
  options: GenerateOptions = {},
): string {
  const o = generateSchema.parse(options);
  const maxNew = o.maxNewTokens;
  requireSyncReads("generate()");
  const temperature = o.temperature;
  const rand = mulberry32(o.seed);
  const stop = o.stop;
  const bos = o.addBos && tokenizer.bosId !== undefined ? [tokenizer.bosId] : [];
  const promptIds = [...bos, ...tokenizer.encode(prompt, { addSpecialTokens: false })];
  const maxPos = model.config.maxPositionEmbeddings;
  const eos = new Set(tokenizer.eosIds);
  const cache = createCache(model);
  const out: number[] = [];
  try {
    let next = promptIds;
    for (let i = 0; i < maxNew && cache.length + next.length <= maxPos; i++) {
      const last = tf.tidy(() => {
        const logits = model.forward([next], { cache }); // [1, T, V]
        const T = logits.shape[1];
        return tf.slice(logits, [0, T - 1, 0], [1, 1, -1]).dataSync() as Float32Array;
      });
      const id = pickToken(last, temperature, o.topK, rand);
      if (eos.has(id)) break;
      out.push(id);
      if (stop.length && stop.some((s) => tokenizer.decode(out).includes(s))) break;
      next = [id];
    }
  } finally {
    disposeCache(cache);
  }
  let text = tokenizer.decode(out, { skipSpecialTokens: true });
  for (const s of stop) {
    const at = text.indexOf(s);
    if (at >= 0) text = text.slice(0, at);
  }
  return text;
}

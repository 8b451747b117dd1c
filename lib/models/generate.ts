/**
 * Text generation with a KV cache (greedy or sampled).
 * @module
 */
import { requireSyncReads } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { Tokenizer } from "../io/tokenizer.ts";
import { createCache, disposeCache, type LlamaForCausalLM } from "./llama.ts";
import { mulberry32 } from "../engine/random.ts";

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

const GEN_KEYS = new Set(["maxNewTokens", "temperature", "topK", "seed", "stop", "addBos"]);

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
  for (const k of Object.keys(options)) {
    if (!GEN_KEYS.has(k)) {
      throw new TypeError(`generate: unknown option "${k}" (known: ${[...GEN_KEYS].join(", ")})`);
    }
  }
  const maxNew = options.maxNewTokens ?? 64;
  requireSyncReads("generate()");
  const temperature = options.temperature ?? 0;
  const rand = mulberry32(options.seed ?? 0);
  const stop = options.stop ?? [];
  const bos = (options.addBos ?? true) && tokenizer.bosId !== undefined ? [tokenizer.bosId] : [];
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
      const id = pickToken(last, temperature, options.topK ?? 0, rand);
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

/**
 * Creating a randomly initialised Llama model (for pretraining the embedded model and for tests).
 * @module
 */
import { requireEngine } from "../engine/backend.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { type LlamaConfig, parseLlamaConfig } from "./llama_config.ts";
import { BLOCK_LINEAR_NAMES, type BlockLinears, linearPath, LlamaBlock } from "./llama_block.ts";
import { DenseLinear } from "./linear.ts";
import { LlamaForCausalLM } from "./llama.ts";
import { linearShape } from "./load_model.ts";
import { RMSNorm } from "./rms_norm.ts";
import { Bias } from "./bias.ts";
import { defineOptions, type FieldsOf, integer, number } from "../options/schema.ts";

/** Options for {@linkcode initModel}. */
export interface InitModelOptions {
  /** RNG seed (weights are a deterministic function of config and seed). @default {0} */
  seed?: number;
  /** Standard deviation of the normal init (HF `initializer_range`). @default {0.02} */
  std?: number;
}

/** The schema of {@linkcode initModel}'s options. */
export const initModelSchema = defineOptions(
  "initModel",
  {
    seed: integer("RNG seed (weights are a deterministic function of config and seed).", {
      min: 0,
      default: 0,
    }),
    std: number("Standard deviation of the normal init (HF initializer_range).", { min: 0, default: 0.02 }),
  } satisfies FieldsOf<InitModelOptions>,
);

/**
 * A new model with HF's initialisation (normal(0, std) weights, unit norms).
 *
 * @example
 * ```ts
 * import { initModel } from "./init_model.ts";
 * import { initEngine } from "../engine/backend.ts";
 * await initEngine({ backend: "cpu" });
 * const m = initModel({ model_type: "llama", vocab_size: 16, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, { seed: 1 });
 * const y = m.forward([[1, 2, 3]]);
 * if (y.shape.join() !== "1,3,16") throw new Error("bad shape");
 * y.dispose(); m.dispose();
 * ```
 */
export function initModel(
  config: LlamaConfig | Record<string, unknown>,
  options: InitModelOptions = {},
): LlamaForCausalLM {
  requireEngine("initModel()");
  const c: LlamaConfig = "hiddenSize" in config ? config as LlamaConfig : parseLlamaConfig(config);
  const o = initModelSchema.parse(options);
  const std = o.std;
  let seed = o.seed;
  const normal = (shape: number[]) => tf.randomNormal(shape, 0, std, "float32", seed++);
  const D = c.hiddenSize, V = c.vocabSize;
  // Unit scale: weight 1, or 0 for Gemma's `1 + weight` norms (HF inits those to zeros).
  const normInit = () => c.normUnitOffset ? tf.zeros([D]) : tf.ones([D]);
  const embedInit = normal([V, D]);
  const embed = tf.variable(embedInit, true, `model.embed_tokens.weight#${crypto.randomUUID()}`);
  embedInit.dispose();
  const layers: LlamaBlock[] = [];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    const linears: Partial<BlockLinears> = {};
    const biases: Partial<Record<keyof BlockLinears, Bias>> = {};
    for (const n of BLOCK_LINEAR_NAMES) {
      linears[n] = new DenseLinear(linearPath(i, n), normal(linearShape(c, n)) as tf.Tensor2D);
      // HF's _init_weights zeroes linear biases.
      if (c.biasedLinears.includes(n)) {
        biases[n] = new Bias(linearPath(i, n), tf.zeros([linearShape(c, n)[0]]));
      }
    }
    layers.push(
      new LlamaBlock(
        i,
        c,
        new RMSNorm(`${p}.input_layernorm`, normInit(), c.rmsNormEps, c.normUnitOffset),
        new RMSNorm(`${p}.post_attention_layernorm`, normInit(), c.rmsNormEps, c.normUnitOffset),
        linears as BlockLinears,
        biases,
      ),
    );
  }
  const norm = new RMSNorm("model.norm", normInit(), c.rmsNormEps, c.normUnitOffset);
  const head = c.tieWordEmbeddings ? null : new DenseLinear("lm_head", normal([V, D]) as tf.Tensor2D);
  return new LlamaForCausalLM(c, embed, layers, norm, head);
}

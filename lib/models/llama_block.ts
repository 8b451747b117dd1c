/**
 * One Llama decoder block: pre-norm grouped-query attention with RoPE, then a
 * pre-norm SwiGLU MLP, each with a residual connection.
 *
 * Dimension legend: B batch, T new tokens, K key positions (past + new), D hidden,
 * H query heads, G kv heads, R = H / G queries per kv head, Dh head dim, F MLP width.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaConfig } from "./llama_config.ts";
import type { Linear, NamedParam } from "./linear.ts";
import type { RMSNorm } from "./rms_norm.ts";
import type { Bias } from "./bias.ts";
import { applyRope } from "./rope.ts";

/** Keys and values kept for generation: `[B, G, K, Dh]` each. */
export interface LayerCache {
  k?: tf.Tensor4D;
  v?: tf.Tensor4D;
}

/** Per-forward context shared by all blocks. */
export interface BlockContext {
  /** RoPE tables for the new positions, `[T, Dh]`, or `[B, 1, T, Dh]` with per-row positions (packing). */
  cos: tf.Tensor2D | tf.Tensor4D;
  sin: tf.Tensor2D | tf.Tensor4D;
  /** Additive mask `[B, 1, T, K]` (0 = attend, large negative = masked). */
  mask: tf.Tensor4D;
  /** When given, past keys/values are read and the new ones appended (kept, not tidied). */
  cache?: LayerCache;
}

/** The projections of a block, by HF module name. */
export interface BlockLinears {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
}

/** Tanh-approximated GELU (PyTorch `gelu(approximate="tanh")`): `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))`. */
function geluTanh(x: tf.Tensor): tf.Tensor {
  const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** Names of the linear layers in a block, in HF order. */
export const BLOCK_LINEAR_NAMES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;

/** Module path prefix of a linear inside block `i` (e.g. `model.layers.0.self_attn.q_proj`). */
export function linearPath(i: number, name: keyof BlockLinears): string {
  const group = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(name) ? "self_attn" : "mlp";
  return `model.layers.${i}.${group}.${name}`;
}

/** A decoder block owning its norms and (replaceable) linear layers. */
export class LlamaBlock {
  constructor(
    readonly index: number,
    readonly config: LlamaConfig,
    readonly inputNorm: RMSNorm,
    readonly postAttentionNorm: RMSNorm,
    readonly linears: BlockLinears,
    /** Biases of the projections that have one (Qwen2's q/k/v), by linear name. */
    readonly biases: Partial<Record<keyof BlockLinears, Bias>> = {},
  ) {}

  /** Projection `name` on `x: [N, I]` → `[N, O]`, plus its bias when it has one. */
  project(name: keyof BlockLinears, x: tf.Tensor2D): tf.Tensor2D {
    const y = this.linears[name].apply(x);
    const b = this.biases[name];
    return b ? b.apply(y) : y;
  }

  /** `h: [B, T, D]` → `[B, T, D]`. */
  forward(h: tf.Tensor3D, ctx: BlockContext): tf.Tensor3D {
    return tf.tidy(() => {
      const a = this.attention(this.inputNorm.apply(h), ctx);
      const h1 = tf.add(h, a) as tf.Tensor3D;
      return tf.add(h1, this.mlp(this.postAttentionNorm.apply(h1))) as tf.Tensor3D;
    });
  }

  /** Grouped-query attention on normed input `x: [B, T, D]`. */
  attention(x: tf.Tensor3D, ctx: BlockContext): tf.Tensor3D {
    const c = this.config;
    const [B, T, D] = x.shape;
    const H = c.numAttentionHeads, G = c.numKeyValueHeads, R = H / G, Dh = c.headDim;
    const x2 = tf.reshape(x, [B * T, D]) as tf.Tensor2D;
    const heads = (y: tf.Tensor2D, n: number) =>
      tf.transpose(tf.reshape(y, [B, T, n, Dh]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, n, T, Dh]
    const q = applyRope(heads(this.project("q_proj", x2), H), ctx.cos, ctx.sin); // [B, H, T, Dh]
    let k = applyRope(heads(this.project("k_proj", x2), G), ctx.cos, ctx.sin); // [B, G, T, Dh]
    let v = heads(this.project("v_proj", x2), G); // [B, G, T, Dh]
    if (ctx.cache) {
      if (ctx.cache.k && ctx.cache.v) {
        k = tf.concat([ctx.cache.k, k], 2);
        v = tf.concat([ctx.cache.v, v], 2);
        ctx.cache.k.dispose();
        ctx.cache.v.dispose();
      }
      ctx.cache.k = tf.keep(k);
      ctx.cache.v = tf.keep(v);
    }
    const K = k.shape[2];
    // Query heads h = g·R + r share kv head g (HF repeat_kv), so group them instead of copying k/v.
    const qg = tf.reshape(q, [B * G, R * T, Dh]);
    const scores = tf.mul(
      tf.matMul(qg, tf.reshape(k, [B * G, K, Dh]), false, true),
      1 / Math.sqrt(Dh),
    ); // [B·G, R·T, K]
    const masked = tf.add(tf.reshape(scores, [B, H, T, K]), ctx.mask);
    const probs = tf.reshape(tf.softmax(masked), [B * G, R * T, K]);
    const ctxv = tf.matMul(probs, tf.reshape(v, [B * G, K, Dh])); // [B·G, R·T, Dh]
    const merged = tf.reshape(tf.transpose(tf.reshape(ctxv, [B, H, T, Dh]), [0, 2, 1, 3]), [
      B * T,
      H * Dh,
    ]) as tf.Tensor2D;
    return tf.reshape(this.project("o_proj", merged), [B, T, D]) as tf.Tensor3D;
  }

  /** SwiGLU MLP `down(silu(gate(x)) · up(x))` (GeGLU with tanh-GELU for Gemma) on `x: [B, T, D]`. */
  mlp(x: tf.Tensor3D): tf.Tensor3D {
    const [B, T, D] = x.shape;
    const x2 = tf.reshape(x, [B * T, D]) as tf.Tensor2D;
    const g = this.project("gate_proj", x2); // [B·T, F]
    const gated = this.config.hiddenAct === "gelu_tanh" ? geluTanh(g) : tf.mul(g, tf.sigmoid(g));
    const act = tf.mul(gated, this.project("up_proj", x2));
    return tf.reshape(this.project("down_proj", act as tf.Tensor2D), [B, T, D]) as tf.Tensor3D;
  }

  /** Trainable parameters of the block (norms and linears). */
  trainableParams(): NamedParam[] {
    return [
      ...this.inputNorm.trainableParams(),
      ...BLOCK_LINEAR_NAMES.flatMap((n) => [
        ...this.linears[n].trainableParams(),
        ...(this.biases[n]?.trainableParams() ?? []),
      ]),
      ...this.postAttentionNorm.trainableParams(),
    ];
  }

  dispose(): void {
    this.inputNorm.dispose();
    this.postAttentionNorm.dispose();
    for (const n of BLOCK_LINEAR_NAMES) {
      this.linears[n].dispose();
      this.biases[n]?.dispose();
    }
  }
}

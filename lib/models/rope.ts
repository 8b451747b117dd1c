/**
 * Rotary position embeddings in the HF "rotate half" convention.
 *
 * Dimension legend: B batch, H heads, T sequence, Dh head dim.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { RopeScaling } from "./llama_config.ts";

/**
 * Inverse frequencies `1 / theta^(2i/d)` for i in [0, d/2), with optional scaling
 * (linear: divide by factor; llama3: the piecewise rule of Llama 3.1, FORMATS.md §5).
 *
 * @example
 * ```ts
 * import { ropeInvFreq } from "./rope.ts";
 * const f = ropeInvFreq(4, 10000, null);
 * if (f[0] !== 1 || Math.abs(f[1] - 0.01) > 1e-12) throw new Error("bad freqs");
 * ```
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling | null): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  if (!scaling) return inv;
  switch (scaling.type) {
    case "linear":
      for (let i = 0; i < half; i++) inv[i] /= scaling.factor;
      return inv;
    case "llama3": {
      const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: old } =
        scaling;
      const lowWavelen = old / low, highWavelen = old / high;
      for (let i = 0; i < half; i++) {
        const wavelen = (2 * Math.PI) / inv[i];
        if (wavelen > lowWavelen) inv[i] = inv[i] / factor;
        else if (wavelen >= highWavelen) {
          // HF: (1 - s) · f / factor + s · f  (mlx writes the same rule on 1/f as a division).
          const s = (old / wavelen - low) / (high - low);
          inv[i] = inv[i] * ((1 - s) / factor + s);
        }
      }
      return inv;
    }
  }
}

/**
 * cos and sin tables `[T, Dh]` for positions `offset .. offset+T-1`
 * (`emb = cat(freqs, freqs)`, as in HF `LlamaRotaryEmbedding`).
 */
export function ropeTables(
  invFreq: Float64Array,
  seqLen: number,
  offset = 0,
): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const half = invFreq.length, d = half * 2;
  const cos = new Float32Array(seqLen * d), sin = new Float32Array(seqLen * d);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      const a = (t + offset) * invFreq[i];
      const c = Math.cos(a), s = Math.sin(a);
      cos[t * d + i] = c;
      cos[t * d + i + half] = c;
      sin[t * d + i] = s;
      sin[t * d + i + half] = s;
    }
  }
  return { cos: tf.tensor2d(cos, [seqLen, d]), sin: tf.tensor2d(sin, [seqLen, d]) };
}

/**
 * cos and sin tables `[B, 1, T, Dh]` for per-row positions `positions[b][t]` (packed sequences,
 * whose positions restart at 0 for every example, as HF's `position_ids`).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { ropeInvFreq, ropeTables, ropeTablesAt } from "./rope.ts";
 * const inv = ropeInvFreq(4, 10000, null);
 * const at = ropeTablesAt(inv, [[0, 1, 0]]).cos.dataSync(), plain = ropeTables(inv, 2).cos.dataSync();
 * if (at[4] !== plain[4] || at[8] !== plain[0]) throw new Error("positions restart");
 * ```
 */
export function ropeTablesAt(
  invFreq: Float64Array,
  positions: number[][],
): { cos: tf.Tensor4D; sin: tf.Tensor4D } {
  const half = invFreq.length, d = half * 2, B = positions.length, T = positions[0]?.length ?? 0;
  const cos = new Float32Array(B * T * d), sin = new Float32Array(B * T * d);
  for (let b = 0; b < B; b++) {
    if (positions[b].length !== T) throw new TypeError(`positionIds must be [${B}, ${T}]`);
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * d;
      for (let i = 0; i < half; i++) {
        const a = positions[b][t] * invFreq[i];
        cos[o + i] = cos[o + i + half] = Math.cos(a);
        sin[o + i] = sin[o + i + half] = Math.sin(a);
      }
    }
  }
  return { cos: tf.tensor4d(cos, [B, 1, T, d]), sin: tf.tensor4d(sin, [B, 1, T, d]) };
}

/**
 * Applies RoPE to `x` `[B, H, T, Dh]`: `x·cos + rotate_half(x)·sin` with
 * `rotate_half(x) = cat(-x[..., Dh/2:], x[..., :Dh/2])`.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { applyRope, ropeInvFreq, ropeTables } from "./rope.ts";
 * await tf.setBackend("cpu");
 * const { cos, sin } = ropeTables(ropeInvFreq(4, 10000, null), 1);
 * const x = tf.tensor4d([1, 2, 3, 4], [1, 1, 1, 4]);
 * // position 0 is the identity rotation
 * const y = applyRope(x, cos, sin).dataSync();
 * if (y[3] !== 4) throw new Error("rope changed position 0");
 * ```
 */
export function applyRope(
  x: tf.Tensor4D,
  cos: tf.Tensor2D | tf.Tensor4D,
  sin: tf.Tensor2D | tf.Tensor4D,
): tf.Tensor4D {
  return tf.tidy(() => {
    const half = x.shape[3] / 2;
    const [x1, x2] = tf.split(x, [half, half], 3);
    const rotated = tf.concat([tf.neg(x2), x1], 3);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
  });
}

/**
 * Internal: Adam moments stored blockwise 8-bit in host memory (outside the wasm heap),
 * as bitsandbytes' blockwise 8-bit optimizers do: m with the signed dynamic map, v with
 * the unsigned one; each step dequantizes, updates in fp32, computes the direction from
 * the fp32 values, and requantizes with fresh per-block absmax. Tensors with fewer than
 * `minSize8bit` elements keep fp32 `tf.Variable` moments (bnb's `min_8bit_size`).
 *
 * With `stochastic`, requantization rounds each value up or down at random so that the
 * stored value is right on average (see `quantize8`). The random stream is a hash of the
 * key, the step and the element index, so it needs no state and a resumed run draws the
 * same numbers as an uninterrupted one.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { AdamHyper } from "./_options.ts";
import { checkSameShape, Fp32Moments, type MomentStore } from "./_moments.ts";
import type { StateTensor } from "./optimizer_state.ts";
import { blockCount, codeThresholds, dynamicMap, quantize8, type Quantized8 } from "./_dynamic_map.ts";
import { type Adam8bitMaps, nativeKernels } from "../engine/native.ts";

/** 32-bit FNV-1a hash of a state key (seeds its stochastic-rounding stream). */
function keyHash(key: string): number {
  let h = 0x811C9DC5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const SIGNED = dynamicMap(true);
const UNSIGNED = dynamicMap(false);
const SIGNED_TH = codeThresholds(SIGNED);
const UNSIGNED_TH = codeThresholds(UNSIGNED);
const MAPS: Adam8bitMaps = {
  signed: SIGNED,
  unsigned: UNSIGNED,
  signedTh: SIGNED_TH,
  unsignedTh: UNSIGNED_TH,
};

interface HostState {
  shape: number[];
  m: Quantized8;
  v: Quantized8;
}

/** Rounding and block layout of {@linkcode Moments8bit}. */
export interface Moments8bitLayout {
  /** Stochastic instead of nearest rounding when requantizing. @default {false} */
  stochastic?: boolean;
  /** Blocks of a 2-D state never straddle its rows (one absmax serves one row). @default {false} */
  rowBlocks?: boolean;
}

/** 8-bit host-memory moments with an fp32 fallback for small tensors. */
export class Moments8bit implements MomentStore {
  #host = new Map<string, HostState>();
  #small: Fp32Moments;
  constructor(
    private readonly h: AdamHyper,
    private readonly blocksize: number,
    private readonly minSize8bit: number,
    private readonly layout: Moments8bitLayout = {},
  ) {
    this.#small = new Fp32Moments(h);
  }

  fusedMoments(key: string, g: tf.Tensor): ReturnType<Fp32Moments["fusedMoments"]> | undefined {
    return g.size < this.minSize8bit ? this.#small.fusedMoments(key, g) : undefined;
  }

  direction(key: string, g: tf.Tensor, t: number): tf.Tensor {
    if (g.size < this.minSize8bit) return this.#small.direction(key, g, t);
    const n = g.size, bs = this.blocksize, row = this.#rowLength(g.shape), k = blockCount(n, bs, row);
    let s = this.#host.get(key);
    if (!s) {
      s = {
        shape: g.shape.slice(),
        m: { codes: new Uint8Array(n), absmax: new Float32Array(k) }, // absmax 0 ⇒ zeros
        v: { codes: new Uint8Array(n), absmax: new Float32Array(k) },
      };
      this.#host.set(key, s);
    }
    checkSameShape(key, s.shape, g.shape);
    const { beta1, beta2, eps } = this.h;
    const gd = g.dataSync() as Float32Array;
    const bc1 = 1 - Math.pow(beta1, t), sbc2 = Math.sqrt(1 - Math.pow(beta2, t));
    const kernels = nativeKernels(), dir = new Float32Array(n);
    if (!this.layout.stochastic) {
      // Fused dequantize → update → requantize per block (native when built; same results either way).
      kernels.adam8bit(gd, s.m, s.v, MAPS, dir, {
        beta1,
        beta2,
        bc1,
        sbc2,
        eps,
        blocksize: bs,
        rowLength: row,
      });
      return tf.tensor(dir, g.shape);
    }
    const m = new Float32Array(n), v = new Float32Array(n);
    kernels.dequantize8(s.m.codes, s.m.absmax, SIGNED, m, bs, row);
    kernels.dequantize8(s.v.codes, s.v.absmax, UNSIGNED, v, bs, row);
    for (let i = 0; i < n; i++) {
      const gi = gd[i];
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      dir[i] = m[i] / bc1 / (Math.sqrt(v[i]) / sbc2 + eps);
    }
    this.#requantize(key, t, s, m, v);
    return tf.tensor(dir, g.shape);
  }

  /** Row length of the block layout for a state of `shape` (undefined: plain runs of `blocksize`). */
  #rowLength(shape: readonly number[]): number | undefined {
    return this.layout.rowBlocks && shape.length === 2 ? shape[1] : undefined;
  }

  #requantize(key: string, t: number, s: HostState, m: Float32Array, v: Float32Array): void {
    const bs = this.blocksize, row = this.#rowLength(s.shape);
    if (this.layout.stochastic) {
      const seed = (keyHash(key) ^ Math.imul(t, 0x27D4EB2F)) >>> 0;
      quantize8(m, SIGNED_TH, bs, s.m, { code: SIGNED, seed }, row);
      quantize8(v, UNSIGNED_TH, bs, s.v, { code: UNSIGNED, seed: (seed ^ 0x5BD1E995) >>> 0 }, row);
    } else {
      const k = nativeKernels();
      k.quantize8(m, SIGNED_TH, s.m.codes, s.m.absmax, bs, row);
      k.quantize8(v, UNSIGNED_TH, s.v.codes, s.v.absmax, bs, row);
    }
  }

  transform(key: string, f: (m: tf.Tensor, v: tf.Tensor) => [tf.Tensor, tf.Tensor], t: number): void {
    this.#small.transform(key, f, t);
    const s = this.#host.get(key);
    if (!s) return;
    const n = s.m.codes.length, bs = this.blocksize, row = this.#rowLength(s.shape);
    const m = new Float32Array(n), v = new Float32Array(n), k = nativeKernels();
    k.dequantize8(s.m.codes, s.m.absmax, SIGNED, m, bs, row);
    k.dequantize8(s.v.codes, s.v.absmax, UNSIGNED, v, bs, row);
    const [m2, v2] = tf.tidy(() => {
      const [a, b] = f(tf.tensor(m, s.shape), tf.tensor(v, s.shape));
      checkSameShape(key, s.shape, a.shape);
      checkSameShape(key, s.shape, b.shape);
      return [a.dataSync() as Float32Array, b.dataSync() as Float32Array];
    });
    // A different stream than the step's own requantization (t + 2^20).
    this.#requantize(key, t + 0x100000, s, m2, v2);
  }

  bytes(): number {
    let n = this.#small.bytes();
    for (const s of this.#host.values()) {
      n += s.m.codes.byteLength + s.v.codes.byteLength + s.m.absmax.byteLength + s.v.absmax.byteLength;
    }
    return n;
  }

  drop(key: string): void {
    this.#small.drop(key);
    this.#host.delete(key);
  }

  dispose(): void {
    this.#small.dispose();
    this.#host.clear();
  }

  /**
   * Small tensors as fp32 (`exp_avg/<key>`); 8-bit ones as their codes (`exp_avg.codes/<key>`,
   * U8, the parameter's shape) and per-block absmax constants (`exp_avg.absmax/<key>`, F32 `[K]`).
   */
  exportInto(out: Record<string, StateTensor>): void {
    this.#small.exportInto(out);
    for (const [k, s] of this.#host) {
      for (const [name, q] of [["exp_avg", s.m], ["exp_avg_sq", s.v]] as const) {
        out[`${name}.codes/${k}`] = { dtype: "U8", shape: s.shape.slice(), data: q.codes.slice() };
        out[`${name}.absmax/${k}`] = { dtype: "F32", shape: [q.absmax.length], data: q.absmax.slice() };
      }
    }
  }

  importFrom(tensors: Record<string, StateTensor>): void {
    this.#small.importFrom(tensors);
    this.#host.clear();
    for (const [name, t] of Object.entries(tensors)) {
      if (!name.startsWith("exp_avg.codes/")) continue;
      const key = name.slice("exp_avg.codes/".length);
      const part = (n: string, dtype: "U8" | "F32") => {
        const x = tensors[`${n}/${key}`];
        if (!x || x.dtype !== dtype) {
          throw new TypeError(`optimizer state: "${n}/${key}" missing or not ${dtype}`);
        }
        return x.data;
      };
      const k = blockCount(t.data.length, this.blocksize, this.#rowLength(t.shape));
      const m = {
        codes: part("exp_avg.codes", "U8") as Uint8Array,
        absmax: part("exp_avg.absmax", "F32") as Float32Array,
      };
      const v = {
        codes: part("exp_avg_sq.codes", "U8") as Uint8Array,
        absmax: part("exp_avg_sq.absmax", "F32") as Float32Array,
      };
      if (m.absmax.length !== k || v.absmax.length !== k) {
        throw new RangeError(
          `optimizer state: "${key}" has ${m.absmax.length} absmax blocks, blocksize ${this.blocksize} needs ${k}`,
        );
      }
      this.#host.set(key, {
        shape: t.shape.slice(),
        m: { codes: m.codes.slice(), absmax: m.absmax.slice() },
        v: { codes: v.codes.slice(), absmax: v.absmax.slice() },
      });
    }
  }
}

/**
 * Fused elementwise kernels of a decoder block, for the hand-written forward/backward
 * (`llama_block_grad.ts`): each output is ONE tensor allocated once (on the wasm heap under the wasm
 * backend) and filled by a plain loop over views of its inputs ({@linkcode filledTensor}), instead
 * of the 4–10 tfjs ops (each a dispatch and a pass over memory) of the formula it replaces. The
 * formulas are the ones the tfjs-op version computes (tests/models/block_kernels_test.ts compares
 * them, odd sizes included).
 *
 * Backends: wasm (views of the heap, no copies) and cpu (`dataSync()` values, one copy into the new
 * tensor). webgpu cannot read tensors synchronously under Deno, so the kernels refuse it; the
 * hand-written block is not used there ({@linkcode fusedKernelsReason} says why, and the trainer
 * takes the tape).
 *
 * Dimension legend: N rows (B·T), D row width, B batch, n heads, T tokens, K key positions, Dh head
 * dim.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { filledTensor } from "../engine/heap_tensor.ts";
import { timedSpan } from "../engine/kernel_timer.ts";

/** {@linkcode filledTensor}, timed as one kernel family in step profiles (`deno task profile`). */
const fill: typeof filledTensor = (shape, f, inputs) =>
  timedSpan("fused block kernels (JS loops)", () => filledTensor(shape, f, inputs));

/**
 * Why the fused kernels cannot run on the current backend (`null` when they can: wasm or cpu).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { fusedKernelsReason } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * if (fusedKernelsReason() !== null) throw new Error("cpu runs the fused kernels");
 * ```
 */
export function fusedKernelsReason(): string | null {
  const be = tf.getBackend();
  return be === "wasm" || be === "cpu"
    ? null
    : `backend ${be}: the fused block kernels read tensors synchronously (wasm or cpu only)`;
}

function check(where: string, ts: Record<string, tf.Tensor>): void {
  const why = fusedKernelsReason();
  if (why) throw new TypeError(`${where}: ${why}`);
  for (const [name, t] of Object.entries(ts)) {
    if (t.dtype !== "float32") {
      throw new TypeError(`${where}: ${name} must be float32, received ${t.dtype} [${t.shape}]`);
    }
  }
}

function rowsOf(where: string, name: string, t: tf.Tensor, width: number): number {
  if (t.size % width !== 0 || t.shape[t.rank - 1] !== width) {
    throw new TypeError(`${where}: ${name} [${t.shape}] must have last dimension ${width}`);
  }
  return t.size / width;
}

/**
 * RMSNorm forward: `r = 1/√(mean(x²) + eps)` `[N, 1]` and `y = x·r·w` `[N, D]` (`w` → `1 + w`
 * when `unitOffset`, Gemma's form). Two tensors, two passes over `x`.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { rmsNormForward } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const x = tf.tensor2d([[3, 4]]), w = tf.tensor1d([1, 2]);
 * const { y, r } = rmsNormForward(x, w, 0, false); // rms = √12.5
 * if (Math.abs(y.dataSync()[1] - 8 / Math.sqrt(12.5)) > 1e-6) throw new Error("wrong y");
 * tf.dispose([x, w, y, r]);
 * ```
 */
export function rmsNormForward(
  x: tf.Tensor2D,
  w: tf.Tensor,
  eps: number,
  unitOffset: boolean,
): { y: tf.Tensor2D; r: tf.Tensor2D } {
  check("rmsNormForward", { x, w });
  const D = w.size, N = rowsOf("rmsNormForward", "x", x, D);
  const r = fill([N, 1], (rv, [xv]) => {
    for (let n = 0, o = 0; n < N; n++, o += D) {
      let s = 0;
      for (let j = 0; j < D; j++) s += xv[o + j] * xv[o + j];
      rv[n] = 1 / Math.sqrt(s / D + eps);
    }
  }, [x]) as tf.Tensor2D;
  return { y: rmsNormApply(x, r, w, unitOffset), r };
}

/**
 * The normed rows again from `x [N, D]` and the saved `r [N, 1]`: `x·r·w` (`1 + w` when `unitOffset`).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { rmsNormApply } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const x = tf.tensor2d([[1, 2]]), r = tf.tensor2d([[0.5]]), w = tf.tensor1d([0, 1]);
 * if (rmsNormApply(x, r, w, true).dataSync().join() !== "0.5,2") throw new Error("1 + w");
 * ```
 */
export function rmsNormApply(x: tf.Tensor2D, r: tf.Tensor2D, w: tf.Tensor, unitOffset: boolean): tf.Tensor2D {
  check("rmsNormApply", { x, r, w });
  const D = w.size, N = rowsOf("rmsNormApply", "x", x, D);
  const off = unitOffset ? 1 : 0;
  return fill([N, D], (y, [xv, rv, wv]) => {
    for (let n = 0, o = 0; n < N; n++, o += D) {
      const rn = rv[n];
      for (let j = 0; j < D; j++) y[o + j] = xv[o + j] * rn * (wv[j] + off);
    }
  }, [x, r, w]) as tf.Tensor2D;
}

/**
 * RMSNorm input gradient, plus an optional residual gradient added on: with `g = dy·w` and
 * `x̂ = x·r`, `dx = r·(g − x̂·mean(g·x̂)) (+ residual)` `[N, D]`.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { rmsNormBackward } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * // a gradient along x itself vanishes (RMSNorm is scale-invariant): dy = x̂ with r = 1/|x|·√D
 * const x = tf.tensor2d([[3, 4]]), r = tf.tensor2d([[1 / Math.sqrt(12.5)]]), w = tf.ones([2]);
 * const dx = rmsNormBackward(x, r, w, tf.mul(x, r) as tf.Tensor2D, false).dataSync();
 * if (Math.abs(dx[0]) > 1e-6 || Math.abs(dx[1]) > 1e-6) throw new Error(`dx ${dx}`);
 * ```
 */
export function rmsNormBackward(
  x: tf.Tensor2D,
  r: tf.Tensor2D,
  w: tf.Tensor,
  dy: tf.Tensor2D,
  unitOffset: boolean,
  residual?: tf.Tensor2D,
): tf.Tensor2D {
  check("rmsNormBackward", { x, r, w, dy, ...(residual ? { residual } : {}) });
  const D = w.size, N = rowsOf("rmsNormBackward", "x", x, D);
  if (dy.size !== x.size) throw new TypeError(`rmsNormBackward: dy [${dy.shape}] must match x [${x.shape}]`);
  if (residual && residual.size !== x.size) {
    throw new TypeError(`rmsNormBackward: residual [${residual.shape}] must match x [${x.shape}]`);
  }
  const off = unitOffset ? 1 : 0;
  const inputs = residual ? [x, r, w, dy, residual] : [x, r, w, dy];
  return fill([N, D], (dx, [xv, rv, wv, dyv, res]) => {
    for (let n = 0, o = 0; n < N; n++, o += D) {
      const rn = rv[n];
      let s = 0;
      for (let j = 0; j < D; j++) s += dyv[o + j] * (wv[j] + off) * xv[o + j] * rn;
      const m = s / D;
      for (let j = 0; j < D; j++) {
        const xh = xv[o + j] * rn;
        dx[o + j] = rn * (dyv[o + j] * (wv[j] + off) - xh * m) + (res ? res[o + j] : 0);
      }
    }
  }, inputs) as tf.Tensor2D;
}

/**
 * RMSNorm weight gradient `dw = Σₙ dy·x·r` `[D]` (the same for Gemma's `1 + w`).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { rmsNormWeightGrad } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const x = tf.tensor2d([[1, 2], [3, 4]]), r = tf.tensor2d([[1], [0.5]]), dy = tf.ones([2, 2]) as tf.Tensor2D;
 * if (rmsNormWeightGrad(x, r, dy).dataSync().join() !== "2.5,4") throw new Error("Σ x·r");
 * ```
 */
export function rmsNormWeightGrad(x: tf.Tensor2D, r: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor1D {
  check("rmsNormWeightGrad", { x, r, dy });
  const D = x.shape[x.rank - 1], N = rowsOf("rmsNormWeightGrad", "x", x, D);
  return fill([D], (dw, [xv, rv, dyv]) => {
    dw.fill(0);
    for (let n = 0, o = 0; n < N; n++, o += D) {
      const rn = rv[n];
      for (let j = 0; j < D; j++) dw[j] += dyv[o + j] * xv[o + j] * rn;
    }
  }, [x, r, dy]) as tf.Tensor1D;
}

/** The MLP gate activations the block supports. */
export type GateActivation = "silu" | "gelu_tanh";

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

function checkKind(where: string, kind: string): asserts kind is GateActivation {
  if (kind !== "silu" && kind !== "gelu_tanh") {
    throw new TypeError(`${where}: activation "${kind}" is not fused (silu or gelu_tanh)`);
  }
}

/**
 * The sigmoid both gate activations are written with, `f(g) = g·s`: `s = σ(g)` for SiLU and
 * `s = σ(2u)`, `u = √(2/π)·(g + 0.044715·g³)` for tanh-GELU (`½(1 + tanh u) = σ(2u)`). The
 * exponentials run in the backend's sigmoid kernel (JS `Math.exp` is several times slower than the
 * wasm one); tanh-GELU's `2u` is one fused pass before it.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { gateSigmoid } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * if (gateSigmoid("gelu_tanh", tf.zeros([1, 1])).dataSync()[0] !== 0.5) throw new Error("σ(0)");
 * ```
 */
export function gateSigmoid(kind: string, gate: tf.Tensor2D): tf.Tensor2D {
  checkKind("gateSigmoid", kind);
  check("gateSigmoid", { gate });
  if (kind === "silu") return tf.sigmoid(gate);
  return tf.tidy(() => {
    const u2 = fill([...gate.shape], (o, [g]) => {
      for (let i = 0; i < o.length; i++) o[i] = 2 * GELU_C * (g[i] + GELU_A * g[i] * g[i] * g[i]);
    }, [gate]);
    return tf.sigmoid(u2) as tf.Tensor2D;
  });
}

/**
 * Gated MLP activation `f(gate)·up = gate·s·up` `[N, F]`, `f` SiLU (SwiGLU) or tanh-GELU (GeGLU),
 * with `s` from {@linkcode gateSigmoid}.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { gatedActivation, gateSigmoid } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const g = tf.tensor2d([[0, 1]]);
 * const a = gatedActivation(g, tf.tensor2d([[5, 2]]), gateSigmoid("silu", g)).dataSync();
 * if (a[0] !== 0 || Math.abs(a[1] - 2 / (1 + Math.exp(-1))) > 1e-6) throw new Error(`${a}`);
 * ```
 */
export function gatedActivation(gate: tf.Tensor2D, up: tf.Tensor2D, s: tf.Tensor2D): tf.Tensor2D {
  check("gatedActivation", { gate, up, s });
  if (gate.size !== up.size || gate.size !== s.size) {
    throw new TypeError(`gatedActivation: gate [${gate.shape}], up [${up.shape}], s [${s.shape}] must match`);
  }
  return fill([...gate.shape], (a, [g, u, sv]) => {
    for (let i = 0; i < a.length; i++) a[i] = g[i] * sv[i] * u[i];
  }, [gate, up, s]) as tf.Tensor2D;
}

/**
 * Backward of {@linkcode gatedActivation}: `dGate = dAct·up·f'(gate)`, `dUp = dAct·f(gate)`
 * (`[N, F]` each, two tensors), with `f' = s·(1 + g·(1 − s))` (SiLU) or
 * `s + 2·g·s·(1 − s)·√(2/π)·(1 + 3·0.044715·g²)` (tanh-GELU).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { gatedActivationBackward, gateSigmoid } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * // silu'(0) = ½, silu(0) = 0
 * const g = tf.zeros([1, 1]) as tf.Tensor2D;
 * const { dGate, dUp } = gatedActivationBackward("silu", g, tf.fill([1, 1], 4), tf.ones([1, 1]), gateSigmoid("silu", g));
 * if (dGate.dataSync()[0] !== 2 || dUp.dataSync()[0] !== 0) throw new Error("wrong");
 * ```
 */
export function gatedActivationBackward(
  kind: string,
  gate: tf.Tensor2D,
  up: tf.Tensor2D,
  dAct: tf.Tensor2D,
  s: tf.Tensor2D,
): { dGate: tf.Tensor2D; dUp: tf.Tensor2D } {
  checkKind("gatedActivationBackward", kind);
  check("gatedActivationBackward", { gate, up, dAct, s });
  if (gate.size !== up.size || gate.size !== dAct.size || gate.size !== s.size) {
    throw new TypeError(
      `gatedActivationBackward: gate [${gate.shape}], up [${up.shape}], dAct [${dAct.shape}], s [${s.shape}] must match`,
    );
  }
  const shape = [...gate.shape];
  const dUp = fill(shape, (o, [g, d, sv]) => {
    for (let i = 0; i < o.length; i++) o[i] = d[i] * g[i] * sv[i];
  }, [gate, dAct, s]) as tf.Tensor2D;
  const gelu = kind === "gelu_tanh";
  const dGate = fill(shape, (o, [g, u, d, sv]) => {
    for (let i = 0; i < o.length; i++) {
      const gi = g[i], si = sv[i];
      const df = gelu
        ? si + 2 * gi * si * (1 - si) * GELU_C * (1 + 3 * GELU_A * gi * gi)
        : si * (1 + gi * (1 - si));
      o[i] = d[i] * u[i] * df;
    }
  }, [gate, up, dAct, s]) as tf.Tensor2D;
  return { dGate, dUp };
}

/** Memory layouts of per-head tensors: `rows` is `[B, T, n, Dh]` (= `[N, n·Dh]`), `heads` is `[B, n, T, Dh]`. */
export type HeadLayout = "rows" | "heads";

/** Where and how {@linkcode ropeHeads} / {@linkcode moveHeads} read and write. */
export interface HeadMove {
  B: number;
  T: number;
  /** Heads. */
  n: number;
  from: HeadLayout;
  to: HeadLayout;
  /** The rotation by −θ (RoPE's transpose, for the backward). */
  inverse?: boolean;
  /** Shape of the result (same element count); default `[B, n, T, Dh]` for `heads`, `[N, n·Dh]` for `rows`. */
  shape?: number[];
}

/** The loop shared by {@linkcode ropeHeads} and {@linkcode moveHeads}. */
function headsKernel(where: string, x: tf.Tensor, Dh: number, o: HeadMove, cos?: tf.Tensor, sin?: tf.Tensor) {
  const { B, T, n } = o;
  if (x.size !== B * T * n * Dh || Dh % 2 !== 0) {
    throw new TypeError(`${where}: x [${x.shape}] is not [B=${B}, T=${T}, n=${n}, Dh=${Dh}] (Dh even)`);
  }
  const perRow = cos !== undefined && cos.rank === 4 && cos.size === B * T * Dh;
  if (cos && !perRow && cos.size !== T * Dh) {
    throw new TypeError(`${where}: cos [${cos.shape}] must be [T=${T}, ${Dh}] or [B=${B}, 1, T, ${Dh}]`);
  }
  const shape = o.shape ?? (o.to === "heads" ? [B, n, T, Dh] : [B * T, n * Dh]);
  if (shape.reduce((a, b) => a * b, 1) !== x.size) {
    throw new TypeError(`${where}: shape [${shape}] does not hold x [${x.shape}]`);
  }
  const half = Dh / 2, sign = o.inverse ? -1 : 1;
  // Offset of row (b, h, t) in each layout.
  const fromHeads = o.from === "heads", toHeads = o.to === "heads";
  const at = (heads: boolean, b: number, h: number, t: number) =>
    heads ? ((b * n + h) * T + t) * Dh : ((b * T + t) * n + h) * Dh;
  return fill(shape, (y, [xv, cv, sv]) => {
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < n; h++) {
        for (let t = 0; t < T; t++) {
          const xi = at(fromHeads, b, h, t), yi = at(toHeads, b, h, t);
          if (!cv) {
            for (let j = 0; j < Dh; j++) y[yi + j] = xv[xi + j];
            continue;
          }
          const ci = ((perRow ? b * T : 0) + t) * Dh;
          for (let j = 0; j < half; j++) {
            const x1 = xv[xi + j], x2 = xv[xi + j + half];
            y[yi + j] = x1 * cv[ci + j] - sign * x2 * sv[ci + j];
            y[yi + j + half] = x2 * cv[ci + j + half] + sign * x1 * sv[ci + j + half];
          }
        }
      }
    }
  }, cos && sin ? [x, cos, sin] : [x]);
}

/**
 * RoPE in the HF rotate-half convention, `x·cos + rotate_half(x)·sin` (`inverse`: the rotation by −θ,
 * which is its transpose, for the backward), fused with the move between layouts: `x` is read as
 * `[B, T, n, Dh]` (`from: "rows"`) or `[B, n, T, Dh]` (`from: "heads"`), and the result is written
 * in the `to` layout. `cos`/`sin` are `[T, Dh]` or per-row `[B, 1, T, Dh]`.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { ropeHeads } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * // θ = 90°: (x1, x2) → (−x2, x1), then back
 * const cos = tf.zeros([1, 2]), sin = tf.ones([1, 2]), x = tf.tensor2d([[1, 2]]);
 * const y = ropeHeads(x, cos, sin, { B: 1, T: 1, n: 1, from: "rows", to: "heads" });
 * if (y.dataSync().join() !== "-2,1") throw new Error(`${y.dataSync()}`);
 * const back = ropeHeads(y, cos, sin, { B: 1, T: 1, n: 1, from: "heads", to: "rows", inverse: true });
 * if (back.dataSync().join() !== "1,2") throw new Error("inverse");
 * ```
 */
export function ropeHeads(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor, o: HeadMove): tf.Tensor {
  check("ropeHeads", { x, cos, sin });
  return headsKernel("ropeHeads", x, cos.shape[cos.rank - 1], o, cos, sin);
}

/**
 * The layout move alone (a transpose of the middle axes): `[B, T, n, Dh]` ⇄ `[B, n, T, Dh]`.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { moveHeads } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const x = tf.tensor2d([[1, 2, 3, 4]]); // T = 1, two heads of 2
 * const y = moveHeads(x, 2, { B: 1, T: 1, n: 2, from: "rows", to: "heads" });
 * if (y.shape.join() !== "1,2,1,2" || y.dataSync().join() !== "1,2,3,4") throw new Error("wrong");
 * ```
 */
export function moveHeads(x: tf.Tensor, Dh: number, o: HeadMove): tf.Tensor {
  check("moveHeads", { x });
  return headsKernel("moveHeads", x, Dh, o);
}

/**
 * Masked, scaled softmax over the last axis: `softmax(scores·scale + mask)` with `scores`
 * `[B, H, T, K]` (any shape with that element order, e.g. `[B·G, R·T, K]`) and the additive mask
 * `[B | 1, 1, T, K]` broadcast over heads: the scale and the mask in one fused pass, the softmax (its
 * exponentials) in the backend's kernel. The result has `scores`' shape.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { maskedSoftmax } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const p = maskedSoftmax(tf.zeros([1, 1, 1, 3]), tf.tensor4d([0, 0, -1e9], [1, 1, 1, 3]), 1, 1);
 * if (p.dataSync().join() !== "0.5,0.5,0") throw new Error(`${p.dataSync()}`);
 * ```
 */
export function maskedSoftmax(scores: tf.Tensor, mask: tf.Tensor, scale: number, heads: number): tf.Tensor {
  check("maskedSoftmax", { scores, mask });
  const K = mask.shape[mask.rank - 1], T = mask.shape[mask.rank - 2];
  const rows = scores.size / K, B = rows / (heads * T);
  const mB = mask.size / (T * K);
  if (!Number.isInteger(B) || (mB !== 1 && mB !== B)) {
    throw new TypeError(
      `maskedSoftmax: scores [${scores.shape}] are not [B, H=${heads}, T=${T}, K=${K}] for mask [${mask.shape}]`,
    );
  }
  // z is freed as soon as the softmax has read it.
  return tf.tidy(() =>
    tf.softmax(fill([...scores.shape], (z, [sv, mv]) => {
      for (let row = 0; row < rows; row++) {
        const t = row % T, b = Math.floor(row / (heads * T));
        const o = row * K, mo = ((mB === 1 ? 0 : b) * T + t) * K;
        for (let j = 0; j < K; j++) z[o + j] = sv[o + j] * scale + mv[mo + j];
      }
    }, [scores, mask]))
  );
}

/**
 * Softmax backward with the scores' scale: `dS = p·(dP − Σₖ dP·p)·scale`, rows of the last axis.
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { softmaxBackward } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * // a constant upstream gradient does not change a softmax
 * const dS = softmaxBackward(tf.tensor2d([[0.25, 0.75]]), tf.tensor2d([[3, 3]]), 2).dataSync();
 * if (dS[0] !== 0 || dS[1] !== 0) throw new Error(`${dS}`);
 * ```
 */
export function softmaxBackward(p: tf.Tensor, dP: tf.Tensor, scale: number): tf.Tensor {
  check("softmaxBackward", { p, dP });
  if (p.size !== dP.size) {
    throw new TypeError(`softmaxBackward: p [${p.shape}] and dP [${dP.shape}] must match`);
  }
  const K = p.shape[p.rank - 1], rows = p.size / K;
  return fill([...p.shape], (dS, [pv, dv]) => {
    for (let row = 0, o = 0; row < rows; row++, o += K) {
      let s = 0;
      for (let j = 0; j < K; j++) s += dv[o + j] * pv[o + j];
      for (let j = 0; j < K; j++) dS[o + j] = pv[o + j] * (dv[o + j] - s) * scale;
    }
  }, [p, dP]);
}

/**
 * `y + scale·z (+ bias) (+ residual)` for `y, z, residual: [N, O]` and `bias: [O]`: a LoRA's
 * low-rank term, a projection's bias and the residual stream added onto the base output in one pass
 * (`z` null: no low-rank term).
 *
 * @example
 * ```ts
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { addScaled } from "./block_kernels.ts";
 * await tf.setBackend("cpu");
 * const s = addScaled(tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 1]]), 2, tf.tensor1d([0, 10]), tf.ones([1, 2]));
 * if (s.dataSync().join() !== "4,15") throw new Error(`${s.dataSync()}`);
 * ```
 */
export function addScaled(
  y: tf.Tensor2D,
  z: tf.Tensor2D | null,
  scale: number,
  bias?: tf.Tensor,
  residual?: tf.Tensor,
): tf.Tensor2D {
  check("addScaled", {
    y,
    ...(z ? { z } : {}),
    ...(bias ? { bias } : {}),
    ...(residual ? { residual } : {}),
  });
  const O = y.shape[y.rank - 1];
  if (z && z.size !== y.size) throw new TypeError(`addScaled: z [${z.shape}] must match y [${y.shape}]`);
  if (bias && bias.size !== O) throw new TypeError(`addScaled: bias [${bias.shape}] must be [${O}]`);
  if (residual && residual.size !== y.size) {
    throw new TypeError(`addScaled: residual [${residual.shape}] must match y [${y.shape}]`);
  }
  const inputs = [y, z, bias, residual].filter((t): t is tf.Tensor => t !== null && t !== undefined);
  const rows = y.size / O;
  return fill([...y.shape], (out, views) => {
    let i = 1;
    const yv = views[0];
    const zv = z ? views[i++] : undefined, bv = bias ? views[i++] : undefined;
    const rv = residual ? views[i++] : undefined;
    const len = out.length;
    if (!bv) {
      // One pass for the combinations without a bias (LoRA ± residual, residual alone).
      if (zv && rv) { for (let k = 0; k < len; k++) out[k] = yv[k] + scale * zv[k] + rv[k]; }
      else if (zv) { for (let k = 0; k < len; k++) out[k] = yv[k] + scale * zv[k]; }
      else if (rv) { for (let k = 0; k < len; k++) out[k] = yv[k] + rv[k]; }
      else out.set(yv);
      return;
    }
    // With a bias: the terms in the order of the op formula ((y + s·z) + b) + residual.
    out.set(yv);
    if (zv) { for (let k = 0; k < len; k++) out[k] += scale * zv[k]; }
    for (let n = 0, o = 0; n < rows; n++, o += O) for (let j = 0; j < O; j++) out[o + j] += bv[j];
    if (rv) { for (let k = 0; k < len; k++) out[k] += rv[k]; }
  }, inputs) as tf.Tensor2D;
}

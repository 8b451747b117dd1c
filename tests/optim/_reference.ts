/**
 * Plain-JS (Float64) reference of PyTorch `torch.optim.AdamW` for the optimizer tests.
 * Formulas (torch/optim/adamw.py, single-tensor path, amsgrad=False):
 *   p ← p·(1 − lr·wd);  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²
 *   p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + eps)
 * @module
 */

/** State of one parameter under the reference AdamW. */
export interface RefState {
  m: Float64Array;
  v: Float64Array;
  t: number;
}

/** Creates zero state for `n` elements. */
export function refState(n: number): RefState {
  return { m: new Float64Array(n), v: new Float64Array(n), t: 0 };
}

/** Returns the Adam direction m̂/(√v̂+eps) after updating the state with `g`. */
export function refDirection(
  s: RefState,
  g: ArrayLike<number>,
  beta1 = 0.9,
  beta2 = 0.999,
  eps = 1e-8,
): Float64Array {
  s.t += 1;
  const bc1 = 1 - beta1 ** s.t, bc2 = 1 - beta2 ** s.t;
  const out = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) {
    s.m[i] = beta1 * s.m[i] + (1 - beta1) * g[i];
    s.v[i] = beta2 * s.v[i] + (1 - beta2) * g[i] * g[i];
    out[i] = (s.m[i] / bc1) / (Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps);
  }
  return out;
}

/** One reference AdamW step on `p` in place. */
export function refAdamWStep(
  p: Float64Array,
  g: ArrayLike<number>,
  s: RefState,
  lr: number,
  o: { beta1?: number; beta2?: number; eps?: number; weightDecay?: number } = {},
): void {
  const wd = o.weightDecay ?? 0;
  for (let i = 0; i < p.length; i++) p[i] *= 1 - lr * wd;
  const d = refDirection(s, g, o.beta1, o.beta2, o.eps);
  for (let i = 0; i < p.length; i++) p[i] -= lr * d[i];
}

/** Deterministic pseudo-random numbers in [-1, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

/** `n` pseudo-random numbers in [-1, 1) times `scale`. */
export function randArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r() * scale;
  return out;
}

/** Largest absolute difference between two arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

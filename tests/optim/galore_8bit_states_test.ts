/**
 * Issue 16: GaLore's moments across projector refreshes, and its 8-bit moments checked
 * element-wise against fp32 ones over a run, next to what bitsandbytes-style 8-bit AdamW
 * achieves in the full space on the same gradients.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "./_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { createAdamW8bit } from "../../lib/optim/adamw8bit.ts";
import { createGaLoreAdamW, type GaLoreAdamWOptions } from "../../lib/optim/galore_adamw.ts";
import { createGaLoreProjector } from "../../lib/optim/galore_projector.ts";
import type { StatefulOptimizer } from "../../lib/optim/optimizer_state.ts";
import { randArray } from "./_reference.ts";

await initEngine();

/**
 * A gradient stream shaped like a real one: a rank-24 part with a decaying spectrum
 * (s_j = (1 + j)^-1.5) whose right factor drifts from step to step, plus noise. `[M, N]`.
 */
function gradientStream(M: number, N: number, steps: number): Float32Array[] {
  const K = 24;
  const a = randArray(M * K, 1), b0 = randArray(N * K, 2);
  const out: Float32Array[] = [];
  for (let t = 0; t < steps; t++) {
    const drift = randArray(N * K, 100 + t, 0.3), noise = randArray(M * N, 500 + t, 0.02);
    const g = new Float32Array(M * N);
    for (let i = 0; i < M; i++) {
      for (let n = 0; n < N; n++) {
        let s = noise[i * N + n];
        for (let j = 0; j < K; j++) s += a[i * K + j] * (b0[n * K + j] + drift[n * K + j]) * (1 + j) ** -1.5;
        g[i * N + n] = s;
      }
    }
    out.push(g);
  }
  return out;
}

/**
 * Steps optimizers `a` (the fp32 reference) and `b` (under test) on one weight each with the
 * same gradients and returns the mean over steps of ‖Δw_b − Δw_a‖ / ‖Δw_a‖ (`error`) and of the
 * least-squares gain ⟨Δw_b, Δw_a⟩ / ‖Δw_a‖² (`gain`: 1 when b's updates are unbiased in scale).
 */
function updateError(
  M: number,
  N: number,
  grads: Float32Array[],
  a: StatefulOptimizer,
  b: StatefulOptimizer,
): { error: number; gain: number } {
  const name = "layers.0.mlp.up_proj.weight";
  const wa = tf.tidy(() => tf.variable(tf.zeros([M, N]))), wb = tf.tidy(() => tf.variable(tf.zeros([M, N])));
  let sum = 0, gain = 0;
  for (const g of grads) {
    const pa = wa.clone(), pb = wb.clone();
    const gt = tf.tensor2d(g, [M, N]);
    a.step([{ name, variable: wa, grad: gt }], 1e-2);
    b.step([{ name, variable: wb, grad: gt }], 1e-2);
    const [e, k] = tf.tidy(() => {
      const da = tf.sub(wa, pa), db = tf.sub(wb, pb);
      return [
        tf.div(tf.norm(tf.sub(db, da)), tf.norm(da)).dataSync()[0],
        tf.div(tf.sum(tf.mul(db, da)), tf.sum(tf.square(da))).dataSync()[0],
      ];
    });
    sum += e;
    gain += k;
    tf.dispose([pa, pb, gt]);
  }
  tf.dispose([wa, wb]);
  a.dispose();
  b.dispose();
  return { error: sum / grads.length, gain: gain / grads.length };
}

const STEPS = 40;
const galore = (o: Partial<GaLoreAdamWOptions>) =>
  createGaLoreAdamW({ r: 16, updateProjGap: 5, scale: 1, ...o });

for (const [M, N, side] of [[344, 96, "right: [M, R] states"], [96, 344, "left: [R, N] states"]] as const) {
  Deno.test(`8-bit GaLore moments track fp32 ones element-wise as closely as 8-bit AdamW tracks AdamW (${side})`, () => {
    const before = tf.memory().numTensors;
    const grads = gradientStream(M, N, STEPS);
    const bnb = updateError(M, N, grads, createAdamW(), createAdamW8bit()).error;
    const g8 = updateError(M, N, grads, galore({}), galore({ eightBit: true })).error;
    assertEquals(tf.memory().numTensors, before, "leaked tensors");
    // Measured: right 0.025 (8-bit AdamW 0.031), left 0.026 (0.028); with blocks that straddle
    // rank directions (no rowBlocks) 0.028 and 0.027.
    assert(g8 < 0.04, `8-bit GaLore update error ${g8.toFixed(4)}`);
    assert(g8 <= bnb, `8-bit GaLore ${g8.toFixed(4)} vs 8-bit AdamW ${bnb.toFixed(4)} in the full space`);
  });
}

Deno.test("stochastic rounding keeps 8-bit GaLore updates unbiased in scale, at a cost in element-wise error", () => {
  const M = 344, N = 96;
  const grads = gradientStream(M, N, STEPS);
  const nearest = updateError(M, N, grads, galore({}), galore({ eightBit: true }));
  const stochastic = updateError(
    M,
    N,
    grads,
    galore({}),
    galore({ eightBit: true, stochasticRounding: true }),
  );
  // Measured here: gain 0.9997 nearest, 1.0001 stochastic; error 0.025 and 0.033. (On the embedded
  // model's recorded gradients nearest rounding's gain drifts to 1.003-1.03 over 100 steps.)
  assert(Math.abs(stochastic.gain - 1) < 0.002, `stochastic gain ${stochastic.gain}`);
  assert(stochastic.error > nearest.error, "stochastic rounding adds noise element-wise");
  assert(stochastic.error < 0.06, `stochastic error ${stochastic.error}`);
});

/** `A · B_s`: gradients that share one rank-R column space but not its basis of singular vectors. */
function sameColumnSpace(M: number, N: number, R: number, steps: number): tf.Tensor2D[] {
  const a = tf.tensor2d(randArray(M * R, 3), [M, R]);
  const out = Array.from(
    { length: steps },
    (_, s) => tf.tidy(() => tf.matMul(a, tf.tensor2d(randArray(R * N, 10 + s), [R, N])) as tf.Tensor2D),
  );
  a.dispose();
  return out;
}

Deno.test("the projector's change of basis maps old low-rank coordinates to new ones for a gradient both subspaces hold", () => {
  const [g1, g2] = sameColumnSpace(40, 24, 3, 2);
  const proj = createGaLoreProjector({ r: 3, updateProjGap: 1, projType: "left" });
  const first = proj.project(g1); // [R, N] in basis P
  let moved: tf.Tensor | undefined, old: tf.Tensor | undefined;
  const second = proj.project(g2, (c) => {
    old = tf.keep(tf.matMul(proj.left!, g2, true, false)); // Pᵀ G2: the old basis is still in place here
    moved = tf.keep(tf.matMul(c.left!, old)); // C · (Pᵀ G2)
  }); // P'ᵀ G2
  assert(moved !== undefined && old !== undefined, "the refresh reported no change of basis");
  const err = tf.tidy(() => tf.max(tf.abs(tf.sub(moved!, second))).dataSync()[0]);
  const scale = tf.tidy(() => tf.max(tf.abs(second)).dataSync()[0]);
  assert(err < 1e-4 * scale, `C·(PᵀG) differs from P'ᵀG by ${err} (of ${scale})`);
  // The bases themselves differ (else the test would prove nothing).
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(old!, second))).dataSync()[0]);
  assert(diff > 1e-2 * scale, `the refresh returned the same basis (${diff})`);
  tf.dispose([g1, g2, first, second, moved!, old!]);
  proj.dispose();
});

Deno.test("rotateMoments: after refreshes the first moment equals the EMA of the gradients in the current basis", () => {
  const M = 40, N = 24, R = 3, name = "layers.0.mlp.up_proj.weight", T = 5;
  const gs = sameColumnSpace(M, N, R, T);
  // EMA of the gradients themselves: Σ_s (1 − β1) β1^(T−1−s) G_s
  const ema = tf.tidy(() => tf.addN(gs.map((g, s) => tf.mul(g, 0.1 * 0.9 ** (T - 1 - s)))));
  const firstMomentError = (rotateMoments: boolean) => {
    const w = tf.tidy(() => tf.variable(tf.zeros([M, N])));
    const opt = createGaLoreAdamW({ r: R, updateProjGap: 2, projType: "left", rotateMoments });
    for (const g of gs) opt.step([{ name, variable: w, grad: g }], 1e-3);
    const m = opt.saveState().tensors[`exp_avg/${name}`].data as Float32Array; // [R, N]
    const err = tf.tidy(() => {
      const want = tf.matMul(opt.projector(name)!.left!, ema, true, false);
      return tf.div(tf.max(tf.abs(tf.sub(tf.tensor2d(m, [R, N]), want))), tf.max(tf.abs(want))).dataSync()[0];
    });
    w.dispose();
    opt.dispose();
    return err;
  };
  const rotated = firstMomentError(true), kept = firstMomentError(false);
  assert(rotated < 1e-4, `rotated first moment off by ${rotated}`);
  assert(kept > 0.1, `kept moments should be in stale coordinates (off by ${kept})`);
  tf.dispose([...gs, ema]);
});

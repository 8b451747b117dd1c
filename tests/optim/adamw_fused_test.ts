/**
 * The fused AdamW update (lib/optim/_adamw_fused.ts, what `createAdamW().step` runs on wasm and
 * cpu) against the tfjs-op update it replaces (`Fp32Moments.direction` + decoupled decay, what
 * webgpu runs) over several steps, on both backends; the moments match too, and no tensor leaks.
 * Lion's fused update likewise.
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { assert, assertEquals } from "./_assert.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { Fp32Moments } from "../../lib/optim/_moments.ts";
import { adamWFusable, adamWFused } from "../../lib/optim/_adamw_fused.ts";
import { createLion } from "../../lib/optim/lion.ts";
import { randArray } from "./_reference.ts";

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

for (const backend of ["cpu", "wasm"]) {
  Deno.test(`${backend}: fused AdamW equals the tfjs-op update over 6 steps (1e-6)`, async () => {
    assert(await tf.setBackend(backend), `backend ${backend} did not start`);
    for (
      const o of [{ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weightDecay: 0.1,
      }]
    ) {
      const shape = [7, 13]; // odd sizes
      const p0 = tf.tensor2d(randArray(91, 5), shape as [number, number]);
      const fused = tf.variable(p0.clone()), ref = tf.variable(p0.clone());
      p0.dispose();
      const before = tf.memory().numTensors;
      const opt = createAdamW(o);
      const moments = new Fp32Moments(o);
      for (let s = 1; s <= 6; s++) {
        const g = tf.tensor2d(randArray(91, 40 + s, 0.3 * s), shape as [number, number]);
        const lr = 0.01 * s;
        assert(adamWFusable([fused, g]), "the fused path is taken");
        opt.step([{ name: "w", variable: fused, grad: g }], lr);
        tf.tidy(() => {
          const dir = moments.direction("w", g, s);
          const decayed = o.weightDecay > 0 ? tf.mul(ref, 1 - lr * o.weightDecay) : ref;
          ref.assign(tf.sub(decayed, tf.mul(dir, lr)));
        });
        g.dispose();
        const d = maxDiff(fused.dataSync(), ref.dataSync());
        assert(d < 1e-6, `${backend} ${JSON.stringify(o)} step ${s}: parameters differ by ${d}`);
      }
      const a = opt.saveState().tensors, b: Record<string, { data: ArrayLike<number> }> = {};
      moments.exportInto(b as never);
      for (const k of ["exp_avg/w", "exp_avg_sq/w"]) {
        assertEquals(a[k].data.length, 91, `${k}: state exported`);
        const d = maxDiff(a[k].data as Float32Array, b[k].data);
        assert(d < 1e-6, `${backend}: ${k} differs by ${d}`);
      }
      opt.dispose();
      moments.dispose();
      assertEquals(tf.memory().numTensors, before, "no tensor leaked");
      fused.dispose();
      ref.dispose();
    }
  });
}

Deno.test("adamWFused names a mismatched tensor", async () => {
  await tf.setBackend("cpu");
  let msg = "";
  try {
    tf.tidy(() =>
      adamWFused(
        tf.zeros([3]),
        tf.zeros([4]),
        tf.zeros([3]),
        tf.zeros([3]),
        {
          beta1: 0.9,
          beta2: 0.999,
          eps: 1e-8,
        },
        1,
        0.1,
        0,
      )
    );
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("g [4]") && msg.includes("p [3]"), msg);
});

for (const backend of ["cpu", "wasm"]) {
  Deno.test(`${backend}: Lion's fused update equals its tfjs-op update over 6 steps`, async () => {
    assert(await tf.setBackend(backend), `backend ${backend} did not start`);
    const o = { beta1: 0.9, beta2: 0.99, weightDecay: 0.1 };
    const p0 = tf.tensor1d(randArray(37, 9));
    const fused = tf.variable(p0.clone()), ref = tf.variable(p0.clone());
    const m = tf.variable(tf.zerosLike(p0), false);
    p0.dispose();
    const before = tf.memory().numTensors;
    const opt = createLion(o);
    for (let s = 1; s <= 6; s++) {
      const g = tf.tensor1d(randArray(37, 70 + s, 0.2 * s));
      const lr = 0.001 * s;
      opt.step([{ name: "w", variable: fused, grad: g }], lr);
      tf.tidy(() => { // lion.ts's tfjs-op update (webgpu)
        const c = tf.add(tf.mul(m, o.beta1), tf.mul(g, 1 - o.beta1));
        ref.assign(tf.sub(tf.mul(ref, 1 - lr * o.weightDecay), tf.mul(tf.sign(c), lr)));
        m.assign(tf.add(tf.mul(m, o.beta2), tf.mul(g, 1 - o.beta2)));
      });
      g.dispose();
      const d = maxDiff(fused.dataSync(), ref.dataSync());
      assert(d < 1e-6, `${backend} step ${s}: parameters differ by ${d}`);
    }
    const d = maxDiff(opt.saveState().tensors["exp_avg/w"].data as Float32Array, m.dataSync());
    assert(d < 1e-6, `${backend}: moments differ by ${d}`);
    opt.dispose();
    assertEquals(tf.memory().numTensors, before, "no tensor leaked");
    tf.dispose([fused, ref, m]);
  });
}

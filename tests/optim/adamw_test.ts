import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { createAdamW, resolveAdamWOptions } from "../../lib/optim/adamw.ts";
import { maxAbsDiff, randArray, refAdamWStep, refState } from "./_reference.ts";

await initEngine();

const N = 12; // elements per parameter
const STEPS = 5;

Deno.test("createAdamW() matches the PyTorch AdamW formulas over several steps", () => {
  for (const o of [{}, { weightDecay: 0.1 }, { beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.01 }]) {
    const p0 = randArray(N, 1);
    const w = tf.variable(tf.tensor1d(p0));
    const ref = Float64Array.from(p0);
    const st = refState(N);
    const opt = createAdamW(o);
    for (let s = 0; s < STEPS; s++) {
      const gArr = randArray(N, 100 + s, 0.5 + s);
      const lr = 0.01 * (s + 1); // lr may change per step (schedules)
      const g = tf.tensor1d(gArr);
      opt.step([{ name: "w", variable: w, grad: g }], lr);
      g.dispose();
      refAdamWStep(ref, gArr, st, lr, o);
    }
    assert(maxAbsDiff(w.dataSync(), ref) < 2e-6, `options ${JSON.stringify(o)}`);
    opt.dispose();
    w.dispose();
  }
});

Deno.test("createAdamW() first step moves each weight by lr against the gradient sign (hand calculation)", () => {
  // t=1: m̂ = g, v̂ = g², so the direction is g/(|g|+eps) ≈ sign(g).
  const w = tf.variable(tf.tensor1d([0, 0, 0]));
  const g = tf.tensor1d([2, -0.001, 5]);
  const opt = createAdamW();
  opt.step([{ name: "w", variable: w, grad: g }], 0.1);
  const got = w.dataSync();
  assert(maxAbsDiff(got, [-0.1, 0.1, -0.1]) < 1e-5, `${got}`);
  opt.dispose();
  g.dispose();
  w.dispose();
});

Deno.test("createAdamW() keeps separate step counters, so layer-wise steps equal one step with all params", () => {
  const shapes: Record<string, number[]> = { a: [3, 4], b: [5], c: [2, 2] };
  const mk = () =>
    Object.fromEntries(
      Object.entries(shapes).map(([k, s], i) => [
        k,
        tf.variable(tf.tensor(randArray(s.reduce((x, y) => x * y), i + 7), s)),
      ]),
    );
  const wAll = mk(), wLayer = mk();
  const optAll = createAdamW({ weightDecay: 0.05 }), optLayer = createAdamW({ weightDecay: 0.05 });
  for (let s = 0; s < 4; s++) {
    const grads = Object.fromEntries(
      Object.entries(shapes).map(([k, sh], i) => [
        k,
        tf.tensor(randArray(sh.reduce((x, y) => x * y), 50 + 10 * s + i), sh),
      ]),
    );
    optAll.step(Object.keys(shapes).map((k) => ({ name: k, variable: wAll[k], grad: grads[k] })), 0.02);
    for (const k of ["c", "a", "b"]) optLayer.step([{ name: k, variable: wLayer[k], grad: grads[k] }], 0.02);
    Object.values(grads).forEach((g) => g.dispose());
  }
  for (const k of Object.keys(shapes)) assert(maxAbsDiff(wAll[k].dataSync(), wLayer[k].dataSync()) < 1e-6, k);
  optAll.dispose();
  optLayer.dispose();
  [...Object.values(wAll), ...Object.values(wLayer)].forEach((v) => v.dispose());
});

Deno.test("createAdamW() leaks no tensors over many steps and frees its state on dispose()", () => {
  const w = tf.variable(tf.tensor2d(randArray(20, 3), [4, 5]));
  const g = tf.tensor2d(randArray(20, 4), [4, 5]);
  const before = tf.memory().numTensors;
  const opt = createAdamW({ weightDecay: 0.01 });
  opt.step([{ name: "w", variable: w, grad: g }], 1e-3);
  const afterFirst = tf.memory().numTensors;
  assertEquals(afterFirst, before + 2, "m and v");
  for (let i = 0; i < 20; i++) opt.step([{ name: "w", variable: w, grad: g }], 1e-3);
  assertEquals(tf.memory().numTensors, afterFirst);
  assertEquals(opt.stateBytes(), 2 * 20 * 4);
  opt.dispose();
  assertEquals(tf.memory().numTensors, before);
  assertEquals(opt.stateBytes(), 0);
  g.dispose();
  w.dispose();
});

Deno.test("createAdamW() rejects unknown options, bad values, bad lr, duplicate names and shape changes", () => {
  assertThrows(() => resolveAdamWOptions({ lr: 1 } as never), TypeError, 'unknown option "lr"');
  assertThrows(() => createAdamW({ beta1: 1 }), RangeError, "beta1");
  assertThrows(() => createAdamW({ eps: 0 }), RangeError, "eps");
  assertThrows(() => createAdamW({ weightDecay: -1 }), RangeError, "weightDecay");
  const opt = createAdamW();
  const w = tf.variable(tf.zeros([2])), g = tf.ones([2]), g3 = tf.ones([3]);
  assertThrows(() => opt.step([{ name: "w", variable: w, grad: g }], NaN), RangeError, "lr");
  assertThrows(
    () => opt.step([{ name: "w", variable: w, grad: g }, { name: "w", variable: w, grad: g }], 1),
    TypeError,
    "twice",
  );
  opt.step([{ name: "w", variable: w, grad: g }], 1);
  assertThrows(() => opt.step([{ name: "w", variable: w, grad: g3 }], 1), TypeError, "shape");
  opt.dispose();
  [w, g, g3].forEach((t) => t.dispose());
});

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { createLion } from "../../lib/optim/lion.ts";
import { maxAbsDiff, randArray } from "./_reference.ts";

await initEngine();

/**
 * Float64 reference of one Lion step (Chen et al. 2023, Algorithm 2; weight decay as
 * lucidrains/lion-pytorch: `p ← p·(1 − lr·wd)` before the update), written here from the
 * paper, independently of lib/optim/lion.ts.
 */
function refLionStep(
  p: Float64Array,
  m: Float64Array,
  g: ArrayLike<number>,
  lr: number,
  o: { beta1?: number; beta2?: number; weightDecay?: number },
): void {
  const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.99, wd = o.weightDecay ?? 0;
  for (let i = 0; i < p.length; i++) {
    const c = b1 * m[i] + (1 - b1) * g[i];
    p[i] = p[i] * (1 - lr * wd) - lr * Math.sign(c);
    m[i] = b2 * m[i] + (1 - b2) * g[i];
  }
}

const N = 12;
const STEPS = 6;

Deno.test("createLion() matches the float64 reference update over several steps", () => {
  const before = tf.memory().numTensors;
  for (const o of [{}, { weightDecay: 0.5 }, { beta1: 0.95, beta2: 0.98, weightDecay: 0.1 }]) {
    const p0 = randArray(N, 1);
    const w = tf.tidy(() => tf.variable(tf.tensor1d(p0)));
    const ref = Float64Array.from(p0), m = new Float64Array(N);
    const opt = createLion(o);
    for (let s = 0; s < STEPS; s++) {
      const gArr = randArray(N, 200 + s, 0.5 + s);
      if (s === 0) gArr[3] = 0; // sign(0) = 0: no move on the first step for this element
      const lr = 0.01 * (s + 1); // lr may change per step (schedules)
      const g = tf.tensor1d(gArr);
      opt.step([{ name: "w", variable: w, grad: g }], lr);
      g.dispose();
      refLionStep(ref, m, gArr, lr, o);
    }
    const err = maxAbsDiff(w.dataSync(), ref);
    assert(err < 1e-6, `options ${JSON.stringify(o)}: max |Δ| ${err}`);
    const state = opt.saveState().tensors["exp_avg/w"];
    assertEquals([state.dtype, state.shape], ["F32", [N]]);
    assert(maxAbsDiff(state.data, m) < 1e-6, "the saved moment is the reference m");
    assertEquals(opt.stateBytes(), N * 4);
    opt.dispose();
    w.dispose();
  }
  assertEquals(tf.memory().numTensors, before, "tensors leaked");
});

Deno.test("Lion: stepping per block equals one call; exported state resumes the same trajectory", () => {
  const mk =
    () => [tf.variable(tf.tensor2d(randArray(6, 5), [2, 3])), tf.variable(tf.tensor1d(randArray(4, 6)))];
  const [a1, b1] = mk(), [a2, b2] = mk(), [a3, b3] = mk();
  const one = createLion({ weightDecay: 0.1 }), split = createLion({ weightDecay: 0.1 });
  let resumed = createLion({ weightDecay: 0.1 });
  for (let s = 0; s < 4; s++) {
    const ga = tf.tensor2d(randArray(6, 10 + s), [2, 3]), gb = tf.tensor1d(randArray(4, 20 + s));
    one.step([{ name: "a", variable: a1, grad: ga }, { name: "b", variable: b1, grad: gb }], 0.02);
    split.step([{ name: "a", variable: a2, grad: ga }], 0.02);
    split.step([{ name: "b", variable: b2, grad: gb }], 0.02);
    resumed.step([{ name: "a", variable: a3, grad: ga }, { name: "b", variable: b3, grad: gb }], 0.02);
    if (s === 1) { // "save" and "resume" with a fresh optimizer
      const saved = resumed.saveState();
      resumed.dispose();
      resumed = createLion({ weightDecay: 0.1 });
      resumed.loadState(saved);
    }
    ga.dispose();
    gb.dispose();
  }
  assertEquals(a2.dataSync(), a1.dataSync());
  assertEquals(b2.dataSync(), b1.dataSync());
  assertEquals(a3.dataSync(), a1.dataSync());
  assertEquals(b3.dataSync(), b1.dataSync());
  for (const t of [one, split, resumed, a1, b1, a2, b2, a3, b3]) t.dispose();
});

Deno.test("createLion() rejects bad options and bad steps with messages that name them", () => {
  assertThrows(() => createLion({ beta1: 1 }), RangeError, "beta1");
  assertThrows(() => createLion({ weightDecay: -1 }), RangeError, "weightDecay");
  assertThrows(() => createLion({ betta2: 0.9 } as never), TypeError, "betta2");
  const saved = createLion({ beta2: 0.95 }).saveState();
  assertThrows(() => createLion().loadState(saved), RangeError, "beta2");
  assertThrows(() => createLion().loadState({ ...saved, name: "adamw" }), TypeError, "adamw");
  const opt = createLion();
  const w = tf.variable(tf.zeros([2])), g = tf.ones([3]);
  assertThrows(() => opt.step([{ name: "w", variable: w, grad: tf.ones([2]) }], -1), RangeError, "lr");
  opt.step([{ name: "w", variable: w, grad: tf.ones([2]) }], 0.1);
  assertThrows(() => opt.step([{ name: "w", variable: w, grad: g }], 0.1), TypeError, "shape");
  opt.dispose();
  w.dispose();
  g.dispose();
});

Deno.test("train() selects Lion by name: after two steps every element moved by 0, lr or 2·lr", async () => {
  const { train } = await import("../../lib/train/trainer.ts");
  const { initModel } = await import("../../lib/models/init_model.ts");
  const model = initModel({
    model_type: "llama",
    vocab_size: 16,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  }, { seed: 3 });
  const params = model.trainableParams();
  const before = params.map((p) => p.variable.dataSync().slice());
  const lr = 1e-3;
  const history = await train(model, [{ ids: [1, 2, 3, 4, 5] }], {
    optimizer: "lion",
    steps: 2,
    lr,
    schedule: "constant",
    batchSize: 1,
    measureMemory: false,
  });
  assertEquals(history.length, 2);
  let moved = 0;
  params.forEach((p, i) => {
    const after = p.variable.dataSync();
    for (let j = 0; j < after.length; j++) {
      const d = Math.abs(after[j] - before[i][j]);
      // each Lion step moves an element by exactly lr (AdamW's second step would not)
      assert(
        d < 1e-7 || Math.abs(d - lr) < 1e-6 || Math.abs(d - 2 * lr) < 1e-6,
        `${p.name}[${j}] moved by ${d}`,
      );
      if (d > 1e-7) moved++;
    }
  });
  assert(moved > 100, `only ${moved} elements moved`);
  model.dispose();
});

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { createGaLoreAdamW, resolveGaLoreAdamWOptions } from "../../lib/optim/galore_adamw.ts";
import { maxAbsDiff, randArray, refDirection, refState } from "./_reference.ts";

await initEngine();

const M = 12, N = 20, RANK = 3; // weight [M, N]; M < N so "std" projects the left side
const W = "layers.0.mlp.up_proj.weight";

function grads(step: number, shapes: Record<string, number[]>): Record<string, tf.Tensor> {
  return Object.fromEntries(
    Object.entries(shapes).map((
      [k, s],
      i,
    ) => [k, tf.tensor(randArray(s.reduce((a, b) => a * b), 100 * step + i), s)]),
  );
}

Deno.test("the GaLore update equals scale·P·Adam(PᵀG) computed independently", () => {
  const w = tf.variable(tf.tensor2d(randArray(M * N, 1), [M, N]));
  const opt = createGaLoreAdamW({ r: RANK, scale: 0.25, weightDecay: 0.1 });
  const ref = Float64Array.from(w.dataSync());
  const st = refState(RANK * N);
  const lr = 0.05;
  for (let s = 0; s < 4; s++) {
    const g = grads(s, { [W]: [M, N] })[W];
    opt.step([{ name: W, variable: w, grad: g }], lr);
    const p = opt.projector(W)!.left!; // [M, R], fixed: updateProjGap 200
    const r = tf.matMul(p, g, true, false); // [R, N]
    const d = refDirection(st, r.dataSync()); // plain-JS Adam on the low-rank gradient
    const pd = tf.matMul(p, tf.tensor2d(Float32Array.from(d), [RANK, N])).dataSync(); // [M, N]
    for (let i = 0; i < ref.length; i++) ref[i] = ref[i] * (1 - lr * 0.1) - lr * 0.25 * pd[i];
    tf.dispose([g, r]);
  }
  assert(maxAbsDiff(w.dataSync(), ref) < 1e-5, `${maxAbsDiff(w.dataSync(), ref)}`);
  assertEquals(opt.projector(W)!.refreshes, 1);
  opt.dispose();
  w.dispose();
});

Deno.test('projType "full" with rank ≥ both dimensions and scale 1 reproduces AdamW exactly', () => {
  const shapes = { [W]: [M, N], "model.norm.weight": [N] };
  const mk = () =>
    Object.fromEntries(
      Object.entries(shapes).map(([k, s], i) => [
        k,
        tf.variable(tf.tensor(randArray(s.reduce((a, b) => a * b), 9 + i), s)),
      ]),
    );
  const a = mk(), b = mk();
  const adam = createAdamW({ weightDecay: 0.01 });
  const galore = createGaLoreAdamW({
    r: N,
    projType: "full",
    scale: 1,
    weightDecay: 0.01,
    updateProjGap: 2,
  });
  for (let s = 0; s < 5; s++) {
    const g = grads(s, shapes);
    adam.step(Object.keys(shapes).map((k) => ({ name: k, variable: a[k], grad: g[k] })), 0.01);
    galore.step(Object.keys(shapes).map((k) => ({ name: k, variable: b[k], grad: g[k] })), 0.01);
    tf.dispose(Object.values(g));
  }
  for (const k of Object.keys(shapes)) assert(maxAbsDiff(a[k].dataSync(), b[k].dataSync()) < 1e-6, k);
  assertEquals(galore.galoreNames().join(), W);
  assertEquals(galore.stateBytes(), adam.stateBytes(), "identity projectors hold no state");
  adam.dispose();
  galore.dispose();
  tf.dispose([...Object.values(a), ...Object.values(b)]);
});

for (const eightBit of [false, true]) {
  Deno.test(`layer-wise GaLore steps equal one step with all parameters (eightBit ${eightBit})`, () => {
    const shapes = { [W]: [M, N], "layers.0.self_attn.q_proj.weight": [96, 64], "layers.0.norm.weight": [N] };
    const mk = () =>
      Object.fromEntries(
        Object.entries(shapes).map(([k, s], i) => [
          k,
          tf.variable(tf.tensor(randArray(s.reduce((a, b) => a * b), 3 + i), s)),
        ]),
      );
    const a = mk(), b = mk();
    const o = { r: RANK, updateProjGap: 2, eightBit, weightDecay: 0.05 };
    const all = createGaLoreAdamW(o), layer = createGaLoreAdamW(o);
    for (let s = 0; s < 5; s++) {
      const g = grads(s, shapes);
      all.step(Object.keys(shapes).map((k) => ({ name: k, variable: a[k], grad: g[k] })), 0.01);
      for (const k of Object.keys(shapes).reverse()) {
        layer.step([{ name: k, variable: b[k], grad: g[k] }], 0.01);
      }
      tf.dispose(Object.values(g));
    }
    for (const k of Object.keys(shapes)) {
      assert(
        maxAbsDiff(a[k].dataSync(), b[k].dataSync()) < 1e-6,
        `${k}: ${maxAbsDiff(a[k].dataSync(), b[k].dataSync())}`,
      );
    }
    assertEquals(all.projector(W)!.refreshes, 3);
    all.dispose();
    layer.dispose();
    tf.dispose([...Object.values(a), ...Object.values(b)]);
  });
}

Deno.test("GaLore-AdamW leaks no tensors over many steps with refreshes", () => {
  const shapes = { [W]: [M, N], "layers.0.norm.weight": [N] };
  const w = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, tf.variable(tf.zeros(s))]));
  const g = grads(0, shapes);
  const opt = createGaLoreAdamW({ r: RANK, updateProjGap: 3 });
  const params = Object.keys(shapes).map((k) => ({ name: k, variable: w[k], grad: g[k] }));
  const before = tf.memory().numTensors;
  opt.step(params, 1e-3);
  const after = tf.memory().numTensors;
  assertEquals(after, before + 5, "4 moments + 1 projector");
  for (let i = 0; i < 12; i++) opt.step(params, 1e-3);
  assertEquals(tf.memory().numTensors, after);
  opt.dispose();
  assertEquals(tf.memory().numTensors, before);
  tf.dispose([...Object.values(w), ...Object.values(g)]);
});

Deno.test("GaLore state is the low-rank moments plus projectors, smaller still with eightBit", () => {
  const shape = [256, 128], name = "layers.0.mlp.down_proj.weight";
  const w = tf.variable(tf.zeros(shape)), g = tf.randomNormal(shape, 0, 1, "float32", 4);
  const sizes: Record<string, number> = {};
  for (
    const [label, opt] of [["adamw", createAdamW()], ["galore", createGaLoreAdamW({ r: 32 })], [
      "galore8bit",
      createGaLoreAdamW({ r: 32, eightBit: true }),
    ]] as const
  ) {
    opt.step([{ name, variable: w, grad: g }], 1e-3);
    sizes[label] = opt.stateBytes();
    opt.dispose();
  }
  // 256 ≥ 128 → right projector [128, 32]; moments [256, 32]
  assertEquals(sizes.adamw, 8 * 256 * 128);
  assertEquals(sizes.galore, 8 * 256 * 32 + 4 * 128 * 32);
  assertEquals(sizes.galore8bit, 2 * 256 * 32 + 2 * 4 * 32 + 4 * 128 * 32);
  tf.dispose([w, g]);
});

Deno.test("galoreParams accepts a RegExp, substrings or a predicate, and only 2-D weights qualify", () => {
  const byDefault = createGaLoreAdamW({ r: 2 });
  assert(byDefault.isGaLore("a.self_attn.q_proj.weight", [4, 4]) && !byDefault.isGaLore("a.mlp.bias", [4]));
  assert(!byDefault.isGaLore("lm_head.weight", [4, 4]));
  const subs = createGaLoreAdamW({ r: 2, galoreParams: ["q_proj", "v_proj"] });
  assert(subs.isGaLore("x.q_proj.weight", [4, 4]) && !subs.isGaLore("x.k_proj.weight", [4, 4]));
  const fn = createGaLoreAdamW({ r: 2, galoreParams: (n) => n.startsWith("x") });
  assert(fn.isGaLore("x.w", [2, 3]));
  assertThrows(() => fn.isGaLore("x.b", [3]), TypeError, "only 2-D");
  assertThrows(
    () => resolveGaLoreAdamWOptions({ r: 2, galoreParams: 3 as never }),
    TypeError,
    "galoreParams",
  );
  assertThrows(
    () => resolveGaLoreAdamWOptions({ r: 2, proj_type: "std" } as never),
    TypeError,
    'option "proj_type" was renamed to "projType"',
  );
  assertThrows(
    () => resolveGaLoreAdamWOptions({ r: 0 }),
    RangeError,
    'createGaLoreAdamW: option "r" must be an integer >= 1, received 0',
  );
  assertThrows(
    () => resolveGaLoreAdamWOptions({ rank: 2 } as never),
    TypeError,
    'createGaLoreAdamW: option "rank" was renamed to "r"',
  );
  assertEquals(createGaLoreAdamW({ r: 2, eightBit: true }).name, "galore8bit");
});

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import type { Optimizer } from "../../lib/optim/optimizer.ts";
import { createAdamW } from "../../lib/optim/adamw.ts";
import { createAdamW8bit } from "../../lib/optim/adamw8bit.ts";
import { createGaLoreAdamW } from "../../lib/optim/galore_adamw.ts";
import { createLion } from "../../lib/optim/lion.ts";
import { exportOptimizerState, importOptimizerState } from "../../lib/optim/optimizer_state.ts";

await initEngine({ backend: "cpu" });

/** Two 2-D GaLore'd weights (one above minSize8bit) and a 1-D one. */
const SHAPES: [string, number[]][] = [
  ["layers.0.mlp.up_proj.weight", [96, 64]],
  ["layers.0.self_attn.q_proj.weight", [16, 12]],
  ["layers.0.norm.weight", [12]],
];
const STEPS = 7;

function grads(step: number): tf.Tensor[] {
  return SHAPES.map(([, s], i) => tf.randomNormal(s, 0, 1, "float32", 100 * step + i));
}

function run(opt: Optimizer, vars: tf.Variable[], from: number, to: number): void {
  for (let t = from; t <= to; t++) {
    const gs = grads(t);
    opt.step(SHAPES.map(([name], i) => ({ name, variable: vars[i], grad: gs[i] })), 1e-2);
    tf.dispose(gs);
  }
}

const MAKERS: [string, () => Optimizer][] = [
  ["adamw", () => createAdamW({ weightDecay: 0.01 })],
  ["adamw8bit", () => createAdamW8bit()],
  ["galore", () => createGaLoreAdamW({ r: 4, updateProjGap: 3 })],
  ["galore8bit", () => createGaLoreAdamW({ r: 4, updateProjGap: 3, eightBit: true })],
  ["lion", () => createLion()],
];

for (const [name, make] of MAKERS) {
  for (const cut of [1, 3, 5]) {
    Deno.test(`${name}: state saved after step ${cut} and loaded into a fresh optimizer continues bit for bit`, () => {
      const before = tf.memory().numTensors;
      const init = () =>
        tf.tidy(() => SHAPES.map(([, s], i) => tf.variable(tf.randomNormal(s, 0, 1, "float32", i + 1))));
      const a = make(), va = init();
      run(a, va, 1, STEPS);
      const b = make(), vb = init();
      run(b, vb, 1, cut);
      const state = exportOptimizerState(b)!;
      b.dispose();
      const c = make();
      importOptimizerState(c, structuredClone(state));
      run(c, vb, cut + 1, STEPS);
      va.forEach((v, i) => assertEquals([...vb[i].dataSync()], [...v.dataSync()], SHAPES[i][0]));
      a.dispose();
      c.dispose();
      tf.dispose([...va, ...vb]);
      assertEquals(tf.memory().numTensors, before, "no tensor leaked");
    });
  }
}

Deno.test("loading another optimizer's state, or one with other settings, is refused", () => {
  const a = createAdamW(), b = createGaLoreAdamW({ r: 4 });
  const w = tf.variable(tf.ones([4])), g = tf.ones([4]);
  a.step([{ name: "w", variable: w, grad: g }], 0.1);
  assertThrows(() => importOptimizerState(b, exportOptimizerState(a)!), TypeError, '"adamw"');
  assertThrows(
    () => importOptimizerState(createAdamW({ beta2: 0.99 }), exportOptimizerState(a)!),
    RangeError,
    "beta2",
  );
  const s = exportOptimizerState(a)!;
  assert(Object.keys(s.tensors).join() === "exp_avg/w,exp_avg_sq/w", Object.keys(s.tensors).join());
  a.dispose();
  b.dispose();
  tf.dispose([w, g]);
});

/**
 * The fused block kernels (lib/models/block_kernels.ts) against the tfjs-op formulas they replace
 * in the hand-written block, on the cpu and the wasm backend (heap views), with odd sizes; no
 * tensor is left behind.
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { assert, assertEquals } from "../_assert.ts";
import {
  addScaled,
  fusedKernelsReason,
  gatedActivation,
  gatedActivationBackward,
  gateSigmoid,
  maskedSoftmax,
  moveHeads,
  rmsNormApply,
  rmsNormBackward,
  rmsNormForward,
  rmsNormWeightGrad,
  ropeHeads,
  softmaxBackward,
} from "../../lib/models/block_kernels.ts";
import { applyRope, ropeInvFreq, ropeTables, ropeTablesAt } from "../../lib/models/rope.ts";
import { EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { adapterLayers, attachLoRA } from "../../lib/adapters/attach.ts";
import { blockBackward, blockForwardSaving } from "../../lib/models/llama_block_grad.ts";

const BACKENDS = ["cpu", "wasm"] as const;

let seed = 1;
const rand = (shape: number[], std = 1) => tf.randomNormal(shape, 0, std, "float32", seed++);

/** Max |a − b| over max(|b|, 1). */
function close(a: tf.Tensor, b: tf.Tensor, what: string, tol = 1e-5): void {
  assertEquals(a.shape, b.shape, `${what}: shape`);
  const [d, s] = tf.tidy(() => [tf.max(tf.abs(tf.sub(a, b))).dataSync()[0], tf.max(tf.abs(b)).dataSync()[0]]);
  assert(d / Math.max(s, 1) <= tol, `${what}: max difference ${d} (scale ${s})`);
}

/** Runs `body` on each backend inside a tidy and checks that it leaves no tensor behind. */
async function onEachBackend(t: Deno.TestContext, body: (backend: string) => void): Promise<void> {
  for (const be of BACKENDS) {
    await t.step(be, async () => {
      assert(await tf.setBackend(be), `backend ${be} did not start`);
      const before = tf.memory().numTensors;
      tf.tidy(() => body(be));
      assertEquals(tf.memory().numTensors, before, `${be}: tensors left behind`);
    });
  }
}

// The tfjs-op formulas of the hand-written block before the kernels.
const refRms = (x: tf.Tensor2D, w: tf.Tensor, eps: number, off: boolean) => {
  const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps));
  return { y: tf.mul(tf.mul(x, r), off ? tf.add(w, 1) : w), r };
};
const refRmsBack = (x: tf.Tensor, r: tf.Tensor, w: tf.Tensor, dy: tf.Tensor, off: boolean) => {
  const xhat = tf.mul(x, r);
  const g = tf.mul(dy, off ? tf.add(w, 1) : w);
  return {
    dx: tf.mul(r, tf.sub(g, tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true)))),
    dw: tf.sum(tf.mul(dy, xhat), 0),
  };
};
const C = Math.sqrt(2 / Math.PI);
const refAct = (kind: string, g: tf.Tensor) => {
  if (kind === "gelu_tanh") {
    const th = tf.tanh(tf.mul(tf.add(g, tf.mul(tf.pow(g, 3), 0.044715)), C));
    const f = tf.mul(tf.mul(g, 0.5), tf.add(th, 1));
    const df = tf.add(
      tf.mul(tf.add(th, 1), 0.5),
      tf.mul(
        tf.mul(tf.mul(g, 0.5), tf.sub(1, tf.square(th))),
        tf.mul(tf.add(tf.mul(tf.square(g), 3 * 0.044715), 1), C),
      ),
    );
    return { f, df };
  }
  const s = tf.sigmoid(g);
  return { f: tf.mul(g, s), df: tf.mul(s, tf.add(tf.mul(g, tf.sub(1, s)), 1)) };
};

Deno.test("fusedKernelsReason accepts cpu and wasm", async () => {
  for (const be of BACKENDS) {
    await tf.setBackend(be);
    assertEquals(fusedKernelsReason(), null);
  }
});

Deno.test("RMSNorm forward, re-application, backward (with residual) and weight gradient", async (t) => {
  await onEachBackend(t, (be) => {
    for (const [N, D] of [[7, 13], [1, 64], [33, 5]]) {
      for (const off of [false, true]) {
        const x = rand([N, D]) as tf.Tensor2D, w = rand([D], 0.5), dy = rand([N, D]) as tf.Tensor2D;
        const res = rand([N, D]) as tf.Tensor2D;
        const want = refRms(x, w, 1e-6, off);
        const got = rmsNormForward(x, w, 1e-6, off);
        const at = `${be} [${N}, ${D}] unitOffset ${off}`;
        close(got.r, want.r, `r ${at}`);
        close(got.y, want.y, `y ${at}`);
        close(rmsNormApply(x, got.r, w, off), want.y, `apply ${at}`);
        const back = refRmsBack(x, want.r, w, dy, off);
        close(rmsNormBackward(x, got.r, w, dy, off), back.dx, `dx ${at}`);
        close(rmsNormBackward(x, got.r, w, dy, off, res), tf.add(back.dx, res), `dx + residual ${at}`);
        close(rmsNormWeightGrad(x, got.r, dy), back.dw, `dw ${at}`);
      }
    }
  });
});

Deno.test("gated activations (SiLU, tanh-GELU) and their backward", async (t) => {
  await onEachBackend(t, (be) => {
    for (const kind of ["silu", "gelu_tanh"]) {
      const [N, F] = [5, 37];
      const gate = rand([N, F], 3) as tf.Tensor2D, up = rand([N, F]) as tf.Tensor2D;
      const dAct = rand([N, F]) as tf.Tensor2D;
      const { f, df } = refAct(kind, gate);
      const s = gateSigmoid(kind, gate);
      close(gatedActivation(gate, up, s), tf.mul(f, up), `${be} ${kind} forward`);
      const got = gatedActivationBackward(kind, gate, up, dAct, s);
      close(got.dUp, tf.mul(dAct, f), `${be} ${kind} dUp`);
      close(got.dGate, tf.mul(tf.mul(dAct, up), df), `${be} ${kind} dGate`);
    }
    let threw = "";
    try {
      gateSigmoid("relu", tf.zeros([1, 1]));
    } catch (e) {
      threw = (e as Error).message;
    }
    assert(threw.includes('"relu"'), `unsupported activations are named: ${threw}`);
  });
});

Deno.test("RoPE fused with the head layout move, forward and inverse, shared and per-row tables", async (t) => {
  await onEachBackend(t, (be) => {
    const [B, T, n, Dh] = [3, 5, 3, 6];
    const inv = ropeInvFreq(Dh, 10000, null);
    const shared = ropeTables(inv, T);
    const positions = [[0, 1, 2, 3, 4], [0, 1, 0, 1, 2], [4, 3, 2, 1, 0]];
    const perRow = ropeTablesAt(inv, positions);
    for (const [label, { cos, sin }] of [["[T, Dh]", shared], ["[B, 1, T, Dh]", perRow]] as const) {
      const rows = rand([B * T, n * Dh]) as tf.Tensor2D;
      const heads = tf.transpose(tf.reshape(rows, [B, T, n, Dh]), [0, 2, 1, 3]) as tf.Tensor4D;
      const want = applyRope(heads, cos, sin);
      const o = { B, T, n, from: "rows" as const, to: "heads" as const };
      close(ropeHeads(rows, cos, sin, o), want, `${be} ${label} rows → heads`);
      close(ropeHeads(heads, cos, sin, { ...o, from: "heads" }), want, `${be} ${label} heads → heads`);
      // The backward: the rotation by −θ, into rows.
      const dY = rand([B, n, T, Dh]) as tf.Tensor4D;
      const wantBack = tf.reshape(tf.transpose(applyRope(dY, cos, tf.neg(sin)), [0, 2, 1, 3]), [
        B * T,
        n * Dh,
      ]);
      close(
        ropeHeads(dY, cos, sin, { B, T, n, from: "heads", to: "rows", inverse: true }),
        wantBack,
        `${be} ${label} inverse heads → rows`,
      );
    }
    const x = rand([B * T, n * Dh]);
    const moved = moveHeads(x, Dh, { B, T, n, from: "rows", to: "heads", shape: [B * n, T, Dh] });
    close(
      moved,
      tf.reshape(tf.transpose(tf.reshape(x, [B, T, n, Dh]), [0, 2, 1, 3]), [B * n, T, Dh]),
      `${be} move`,
    );
    close(moveHeads(moved, Dh, { B, T, n, from: "heads", to: "rows" }), x, `${be} move back`);
  });
});

Deno.test("masked scaled softmax and its backward, shared and per-row masks", async (t) => {
  await onEachBackend(t, (be) => {
    const [B, G, R, T] = [2, 3, 2, 7];
    const H = G * R, scale = 1 / Math.sqrt(6);
    const causal = tf.tidy(() => {
      const m = tf.buffer([1, 1, T, T]);
      for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m.set(-1e9, 0, 0, i, j);
      return m.toTensor();
    });
    const padded = tf.concat([
      causal,
      tf.add(causal, tf.reshape(tf.mul(tf.cast(tf.less(tf.range(0, T), 2), "float32"), -1e9), [1, 1, 1, T])),
    ], 0);
    for (const [label, mask] of [["[1, 1, T, K]", causal], ["[B, 1, T, K]", padded]] as const) {
      const scores = rand([B * G, R * T, T], 2);
      const want = tf.reshape(
        tf.softmax(tf.add(tf.reshape(tf.mul(scores, scale), [B, H, T, T]), mask)),
        scores.shape,
      );
      const p = maskedSoftmax(scores, mask, scale, H);
      close(p, want, `${be} softmax ${label}`);
      const dP = rand(scores.shape);
      const wantBack = tf.mul(tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), -1, true))), scale);
      close(softmaxBackward(p, dP, scale), wantBack, `${be} softmax backward ${label}`);
    }
  });
});

Deno.test("addScaled: LoRA term, bias and residual in one pass", async (t) => {
  await onEachBackend(t, (be) => {
    const [N, O] = [9, 11];
    const y = rand([N, O]) as tf.Tensor2D, z = rand([N, O]) as tf.Tensor2D, b = rand([O]), res = rand([N, O]);
    close(addScaled(y, z, 0.25, b, res), tf.add(tf.add(tf.add(y, tf.mul(z, 0.25)), b), res), `${be} all`);
    close(addScaled(y, null, 0, undefined, res), tf.add(y, res), `${be} residual only`);
    close(addScaled(y, z, 2), tf.add(y, tf.mul(z, 2)), `${be} LoRA only`);
  });
});

Deno.test("on wasm, the hand-written block with the kernels gives the tape's gradients", async () => {
  assert(await tf.setBackend("wasm"), "wasm backend did not start");
  const model = await loadModel(EMBEDDED_MODEL_DIR);
  attachLoRA(model, { r: 4, alpha: 8 });
  for (const l of adapterLayers(model)) {
    tf.tidy(() => l.loraB.assign(rand(l.loraB.shape, 0.05) as tf.Tensor2D));
  }
  const before = tf.memory().numTensors;
  const layer = model.layers[0];
  const ctx = model.context(2, 5, { attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]] });
  const h = tf.tidy(() => model.embed(tf.tensor2d([[5, 9, 2, 7, 1], [4, 4, 8, 2, 6]], [2, 5], "int32")));
  const dOut = rand(h.shape) as tf.Tensor3D;
  const params = layer.trainableParams();
  const tape = tf.engine().gradients(
    () => layer.forward(h, ctx),
    [h, ...params.map((p) => p.variable)],
    dOut,
    true,
  );
  const { out, saved } = blockForwardSaving(layer, h, ctx);
  close(out, tape.value, "forward output");
  const { dh, grads } = blockBackward(layer, saved, dOut, ctx);
  close(dh, tape.grads[0], "input gradient", 1e-4);
  assertEquals(grads.size, params.length);
  params.forEach((p, i) => close(grads.get(p.variable)!, tape.grads[i + 1], p.name, 1e-4));
  tf.dispose([h, dOut, out, dh, tape.value, ...tape.grads, ...grads.values(), ctx.cos, ctx.sin, ctx.mask]);
  assertEquals(tf.memory().numTensors, before, "no tensor leaked");
  model.dispose();
});

/**
 * `computeDtype` (bitsandbytes' `bnb_4bit_compute_dtype`): `"bfloat16"` runs the 4-bit layers'
 * matmuls on the native bf16 GEMM, close to fp32 but not equal; the hand-written block backward
 * still matches the tape under it; a QLoRA run trains; and every case it cannot run is refused
 * saying why (cpu backend, no 4-bit layer, unknown dtype).
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { assert, assertEquals } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { nativeKernels } from "../../lib/engine/native.ts";
import { matmulPrecision } from "../../lib/engine/matmul_kernels.ts";
import { loadModel } from "../../lib/models/load_model.ts";
import { EMBEDDED_DATA_DIR, EMBEDDED_MODEL_DIR } from "../../lib/models/embedded.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { blockBackward, blockForwardSaving } from "../../lib/models/llama_block_grad.ts";
import { train } from "../../lib/train/trainer.ts";
import type { TrainingRecord } from "../../lib/train/data.ts";
import { loadTokenizer } from "../../lib/io/tokenizer.ts";
import { readJsonl } from "../../lib/io/jsonl.ts";

const native = nativeKernels();
const noBf16 = native.bf16Gemm
  ? false
  : native.kind !== "native"
  ? `native kernels not built (${native.source}): run scripts/setup.sh`
  : "this CPU lacks avx512_bf16";

const IDS = [[5, 9, 2, 7, 1, 3, 8, 8, 4, 11]];

function rel(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den; // all-zero gradients (a LoRA whose B is still zero) compare absolutely
}

Deno.test("computeDtype is refused where it cannot run, naming the fix", async () => {
  await initEngine({ backend: "cpu" });
  const err = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4", computeDtype: "bfloat16" }).then(
    () => null,
    (e: Error) => e.message,
  );
  assert(err && /wasm backend/.test(err) && /initEngine\(\{ backend: "wasm" \}\)/.test(err), String(err));
  const bad = await loadModel(EMBEDDED_MODEL_DIR, { computeDtype: "fp16" as never }).then(
    () => null,
    (e: Error) => e.message,
  );
  assert(bad && /computeDtype/.test(bad) && /bfloat16/.test(bad), String(bad));
});

Deno.test({
  name: "bfloat16: logits close to fp32, not equal; dense models refuse it; precision restored",
  ignore: noBf16 !== false,
  async fn() {
    await initEngine({ backend: "wasm" });
    const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    const fp32 = tf.tidy(() => model.forward(IDS).dataSync() as Float32Array);
    assertEquals(model.setComputeDtype("bfloat16"), 28);
    const bf16 = tf.tidy(() => model.forward(IDS).dataSync() as Float32Array);
    const e = rel(bf16, fp32);
    assert(e > 0 && e < 2e-2, `bf16 vs fp32 logits: relative error ${e}`);
    assertEquals(matmulPrecision(), "float32", "the engine's precision is restored after each layer");
    model.setComputeDtype("float32");
    const back = tf.tidy(() => model.forward(IDS).dataSync() as Float32Array);
    assertEquals(rel(back, fp32), 0);
    model.dispose();
    const dense = await loadModel(EMBEDDED_MODEL_DIR);
    let msg = "";
    try {
      dense.setComputeDtype("bfloat16");
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(/has none/.test(msg) && /quantize/.test(msg), msg);
    dense.dispose();
  },
});

Deno.test({
  name: "bfloat16: the hand-written block backward matches the tape's gradients",
  ignore: noBf16 !== false,
  async fn() {
    await initEngine({ backend: "wasm" });
    const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4", computeDtype: "bfloat16" });
    attachLoRA(model, { r: 4 });
    const layer = model.layers[1];
    for (const l of [layer]) {
      for (const n of ["q_proj", "down_proj"] as const) {
        const a = l.linears[n] as unknown as { loraB: tf.Variable };
        tf.tidy(() => a.loraB.assign(tf.randomNormal(a.loraB.shape, 0, 0.05, "float32", 3)));
      }
    }
    const ctx = model.context(1, IDS[0].length);
    const h = tf.randomNormal([1, IDS[0].length, model.config.hiddenSize], 0, 1, "float32", 1) as tf.Tensor3D;
    const dOut = tf.randomNormal(h.shape, 0, 1, "float32", 2) as tf.Tensor3D;
    const params = layer.trainableParams();
    const tape = tf.engine().gradients(
      () => layer.forward(h, ctx),
      [h, ...params.map((p) => p.variable)],
      dOut,
    );
    const { out, saved } = blockForwardSaving(layer, h, ctx);
    const { dh, grads } = blockBackward(layer, saved, dOut, ctx);
    const e = rel(dh.dataSync() as Float32Array, tape.grads[0].dataSync() as Float32Array);
    assert(e < 1e-4, `input gradient: ${e}`);
    params.forEach((p, i) => {
      const g = rel(
        grads.get(p.variable)!.dataSync() as Float32Array,
        tape.grads[i + 1].dataSync() as Float32Array,
      );
      assert(g < 1e-4, `${p.name}: ${g}`);
    });
    tf.dispose([h, dOut, out, dh, tape.value, ...tape.grads, ...grads.values(), ctx.cos, ctx.sin, ctx.mask]);
    model.dispose();
  },
});

Deno.test({
  name: "bfloat16: a QLoRA run trains like fp32 (loss within 2% at every step)",
  ignore: noBf16 !== false,
  async fn() {
    await initEngine({ backend: "wasm" });
    const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
    const data = (await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`)).slice(
      0,
      16,
    ) as TrainingRecord[];
    const losses: number[][] = [];
    for (const computeDtype of ["float32", "bfloat16"] as const) {
      const model = await loadModel(EMBEDDED_MODEL_DIR, { quantize: "nf4", computeDtype });
      attachLoRA(model, { r: 8 });
      const history = await train(model, data, { tokenizer, steps: 6, lr: 2e-3, batchSize: 4 });
      losses.push(history.map((r) => r.loss));
      model.dispose();
    }
    assert(losses[1][5] < losses[1][0], `bf16 loss falls: ${losses[1]}`);
    losses[0].forEach((l, i) => {
      assert(Math.abs(losses[1][i] / l - 1) < 0.02, `step ${i + 1}: fp32 ${l}, bf16 ${losses[1][i]}`);
    });
  },
});

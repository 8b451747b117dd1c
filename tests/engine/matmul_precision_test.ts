import * as tf from "@tensorflow/tfjs-core";
import { loadBlas } from "../../lib/engine/blas.ts";
import { nativeKernels, typescriptKernels } from "../../lib/engine/native.ts";
import {
  matmulPrecision,
  registerMatmulKernels,
  restoreMatmulKernels,
  setMatmulPrecision,
} from "../../lib/engine/matmul_kernels.ts";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { randomValues } from "./_helpers.ts";
import "@tensorflow/tfjs-backend-wasm";

const native = nativeKernels();
const blas = loadBlas();
const why = !native.bf16Gemm
  ? `native bf16 GEMM unavailable (${native.source}): build it with scripts/setup.sh on an avx512_bf16 CPU`
  : !blas
  ? "no BLAS library: the float32 comparison needs cblas_sgemm"
  : false;

/** [M, K] @ [N, K]ᵀ through tf.matMul and through the TypeScript bf16 reference / sgemm on the same data. */
const M = 37, K = 129, N = 70;
const A = randomValues(M * K, 1), B = randomValues(N * K, 2);

function viaTf(): Float32Array {
  return tf.tidy(() =>
    tf.matMul(tf.tensor2d(A, [M, K]), tf.tensor2d(B, [N, K]), false, true).dataSync()
  ) as Float32Array;
}

function reference(kind: "bf16" | "sgemm"): Float32Array {
  const c = new Float32Array(M * N);
  if (kind === "bf16") typescriptKernels.gemmBf16(false, true, M, N, K, 1, A, K, B, K, 0, c, N);
  else blas!.sgemm(false, true, M, N, K, 1, A, K, B, K, 0, c, N);
  return c;
}

function worst(x: Float32Array, y: Float32Array): number {
  let w = 0;
  for (let i = 0; i < x.length; i++) w = Math.max(w, Math.abs(x[i] - y[i]));
  return w;
}

Deno.test({
  name: 'tf.matMul under setMatmulPrecision("bfloat16") runs the bf16 GEMM; "float32" restores sgemm exactly',
  ignore: why !== false,
  async fn() {
    await tf.setBackend("wasm");
    await tf.ready();
    registerMatmulKernels({ blas });
    const before = tf.memory().numTensors;
    try {
      const fp32 = viaTf();
      assertEquals(Array.from(fp32), Array.from(reference("sgemm")), "float32 is sgemm");
      setMatmulPrecision("bfloat16");
      assertEquals(matmulPrecision(), "bfloat16");
      const bf = viaTf();
      // Same as the bf16 reference up to float32 summation order; far from it would be fp32.
      assert(
        worst(bf, reference("bf16")) < 1e-5,
        `bf16 matmul vs reference: ${worst(bf, reference("bf16"))}`,
      );
      const d = worst(bf, fp32);
      assert(d > 1e-4 && d < 0.1, `bf16 vs fp32 differ by ${d}: expected bf16 rounding (~1e-2)`);
      // _FusedMatMul (bias + activation) goes through it too.
      const fused = tf.tidy(() =>
        tf.fused.matMul({
          a: tf.tensor2d(A, [M, K]),
          b: tf.tensor2d(B, [N, K]),
          transposeB: true,
          bias: tf.scalar(0.5),
          activation: "relu",
        }).dataSync()
      ) as Float32Array;
      const expect = reference("bf16").map((v) => Math.max(v + 0.5, 0));
      assert(worst(fused, expect) < 1e-5, `fused bf16 matmul vs reference: ${worst(fused, expect)}`);
      // Without BLAS registered the bf16 GEMM still runs (it does not need sgemm).
      registerMatmulKernels({ blas: null });
      assert(worst(viaTf(), bf) === 0, "bf16 with blas: null differs from bf16 with BLAS");
      registerMatmulKernels({ blas });
      setMatmulPrecision("float32");
      assertEquals(Array.from(viaTf()), Array.from(fp32), "float32 after bfloat16 is sgemm again");
    } finally {
      setMatmulPrecision("float32");
      restoreMatmulKernels();
    }
    assertEquals(tf.memory().numTensors, before);
  },
});

Deno.test("setMatmulPrecision refuses unknown precisions", () => {
  assertThrows(() => setMatmulPrecision("float16" as "float32"), RangeError, '"float32" or "bfloat16"');
  assertEquals(matmulPrecision(), "float32");
});

Deno.test('setMatmulPrecision("bfloat16") without the native library says to run scripts/setup.sh', async () => {
  // A fresh process with the native kernels switched off (the loaded library cannot be unloaded here).
  const code = `import { setMatmulPrecision, matmulPrecision } from ${
    JSON.stringify(new URL("../../lib/engine/matmul_kernels.ts", import.meta.url).href)
  };
try { setMatmulPrecision("bfloat16"); console.log("accepted"); }
catch (e) { console.log(matmulPrecision() + ": " + e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { NBTUNE_NATIVE: "off" },
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert(text.startsWith("float32: ") && text.includes("scripts/setup.sh"), text);
});

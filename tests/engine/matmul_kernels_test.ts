import * as tf from "@tensorflow/tfjs-core";
import { ensureGradients } from "../../lib/engine/gradients.ts";
import { loadBlas } from "../../lib/engine/blas.ts";
import {
  matmulKernelMode,
  registerMatmulKernels,
  restoreMatmulKernels,
} from "../../lib/engine/matmul_kernels.ts";
import { assert, assertEquals, maxAbsDiff, on, randomValues } from "./_helpers.ts";

const HAVE_BLAS = loadBlas() !== null;

const TOL = 1e-4;
type FusedOpts = Omit<Parameters<typeof tf.fused.matMul>[0], "a" | "b">;
const TRANSPOSES: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

interface Case {
  a: number[]; // logical [...batchA, M, K] before transposition
  b: number[]; // logical [...batchB, K, N]
}

const CASES: Case[] = [
  { a: [1, 1], b: [1, 1] },
  { a: [3, 17], b: [17, 64] },
  { a: [64, 3], b: [3, 1] },
  { a: [17, 64], b: [64, 17] },
  { a: [2, 3, 17], b: [2, 17, 5] }, // batched 3-D
  { a: [2, 3, 4, 5], b: [2, 3, 5, 6] }, // batched 4-D
  { a: [4, 3, 17], b: [1, 17, 5] }, // b batch broadcast
  { a: [1, 3, 17], b: [4, 17, 5] }, // a batch broadcast
  { a: [2, 1, 3, 4], b: [1, 3, 4, 2] }, // both broadcast -> [2, 3]
  { a: [5, 3, 7], b: [7, 2] }, // rank 3 @ rank 2
  { a: [3, 0], b: [0, 4] }, // K = 0
];

/** Stored shape of a logical operand when the kernel gets transpose=`t`. */
function stored(shape: number[], t: boolean): number[] {
  if (!t) return shape;
  const s = shape.slice();
  [s[s.length - 2], s[s.length - 1]] = [s[s.length - 1], s[s.length - 2]];
  return s;
}

function product(s: number[]) {
  return s.reduce((p, q) => p * q, 1);
}

/** Runs one matmul (or fused matmul) on the active backend. */
function run(c: Case, tA: boolean, tB: boolean, seed: number, fused?: FusedOpts, expand = false) {
  return tf.tidy(() => {
    const sa = stored(c.a, tA), sb = stored(c.b, tB);
    let a = tf.tensor(randomValues(product(sa), seed), sa);
    let b = tf.tensor(randomValues(product(sb), seed + 1), sb);
    if (expand && sa.length === sb.length && sa.length > 2) {
      // The cpu reference only broadcasts a batch of 1 against the whole batch; tile explicitly.
      const batch = tf.broadcast_util.assertAndGetBroadcastShape(sa.slice(0, -2), sb.slice(0, -2));
      a = tf.broadcastTo(a, [...batch, ...sa.slice(-2)]);
      b = tf.broadcastTo(b, [...batch, ...sb.slice(-2)]);
    }
    const y = fused
      ? tf.fused.matMul({ a, b, transposeA: tA, transposeB: tB, ...fused })
      : tf.matMul(a, b, tA, tB);
    return { shape: y.shape, data: y.dataSync() as Float32Array };
  });
}

async function compareAll(label: string) {
  let seed = 1;
  for (const c of CASES) {
    for (const [tA, tB] of TRANSPOSES) {
      seed += 2;
      const want = await on("cpu", () => run(c, tA, tB, seed, undefined, true));
      const before = await on("wasm", () => tf.memory().numTensors);
      const got = run(c, tA, tB, seed);
      assertEquals(tf.memory().numTensors, before, `${label}: leak`);
      assertEquals(got.shape, want.shape, `${label} ${JSON.stringify(c)} tA=${tA} tB=${tB}`);
      const d = maxAbsDiff(got.data, want.data);
      assert(d < TOL, `${label} ${JSON.stringify(c)} tA=${tA} tB=${tB}: max diff ${d}`);
    }
  }
}

Deno.test({
  name: "BLAS BatchMatMul matches the cpu backend for all transposes, batches and broadcasts",
  ignore: !HAVE_BLAS, // reason: no OpenBLAS on this machine (scripts/setup.sh installs it)
}, async () => {
  const blas = loadBlas()!;
  await on("wasm", () => registerMatmulKernels({ blas }));
  assertEquals(matmulKernelMode(), "blas");
  await compareAll("blas");
  restoreMatmulKernels();
});

Deno.test("explicit-transpose BatchMatMul (no BLAS) matches the cpu backend", async () => {
  await on("wasm", () => registerMatmulKernels({ blas: null }));
  assertEquals(matmulKernelMode(), "explicit-transpose");
  await compareAll("explicit");
  restoreMatmulKernels();
});

const FUSED: FusedOpts[] = [
  { activation: "linear" },
  { activation: "relu" },
  { activation: "relu6" },
  { activation: "elu" },
  { activation: "sigmoid" },
  { activation: "leakyrelu", leakyreluAlpha: 0.3 },
];

async function compareFused(label: string) {
  const c: Case = { a: [2, 17, 9], b: [2, 9, 3] };
  let seed = 100;
  for (const [tA, tB] of TRANSPOSES) {
    for (const f of FUSED) {
      for (const biasShape of [[3], [1, 3], [17, 3], []]) {
        seed++;
        const bias = () => tf.tensor(randomValues(product(biasShape), seed + 7), biasShape);
        const want = await on("cpu", () => tf.tidy(() => run(c, tA, tB, seed, { ...f, bias: bias() })));
        const got = await on("wasm", () => tf.tidy(() => run(c, tA, tB, seed, { ...f, bias: bias() })));
        const d = maxAbsDiff(got.data, want.data);
        assert(d < TOL, `${label} ${f.activation} bias ${biasShape} tA=${tA} tB=${tB}: diff ${d}`);
      }
    }
    seed++;
    const prelu = () => ({
      activation: "prelu" as const,
      preluActivationWeights: tf.tensor(randomValues(3, seed)),
    });
    const want = await on("cpu", () => tf.tidy(() => run(c, tA, tB, seed, prelu())));
    const got = await on("wasm", () => tf.tidy(() => run(c, tA, tB, seed, prelu())));
    assert(maxAbsDiff(got.data, want.data) < TOL, `${label} prelu tA=${tA} tB=${tB}`);
  }
}

Deno.test({
  name: "BLAS _FusedMatMul adds broadcast bias and applies every activation like the cpu backend",
  ignore: !HAVE_BLAS, // reason: no OpenBLAS on this machine (scripts/setup.sh installs it)
}, async () => {
  const blas = loadBlas()!;
  await on("wasm", () => registerMatmulKernels({ blas }));
  await compareFused("blas");
  restoreMatmulKernels();
});

Deno.test("explicit-transpose _FusedMatMul matches the cpu backend", async () => {
  await on("wasm", () => registerMatmulKernels({ blas: null }));
  await compareFused("explicit");
  restoreMatmulKernels();
});

Deno.test("matmul gradients through the BLAS kernels match the cpu backend without leaking", async () => {
  assert(await ensureGradients(), "tfjs op gradients must be registered");
  const blas = loadBlas();
  await on("wasm", () => registerMatmulKernels({ blas }));
  const grads = () =>
    tf.tidy(() => {
      const x = tf.tensor(randomValues(2 * 5 * 8, 9), [2, 5, 8]);
      const w = tf.tensor(randomValues(8 * 8, 10), [8, 8]);
      const [gx, gw] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
        tf.sum(tf.square(tf.matMul(tf.reshape(x, [10, 8]), w, false, true)))
      )([x, w]);
      return [gx.dataSync(), gw.dataSync()] as Float32Array[];
    });
  const want = await on("cpu", grads);
  const before = await on("wasm", () => tf.memory().numTensors);
  const got = grads();
  assertEquals(tf.memory().numTensors, before);
  assert(maxAbsDiff(got[0], want[0]) < 1e-3 && maxAbsDiff(got[1], want[1]) < 1e-3);
  restoreMatmulKernels();
});

Deno.test("int32 matmul still goes to the original wasm kernel", async () => {
  await on("wasm", () => registerMatmulKernels({ blas: loadBlas() }));
  // The stock wasm kernel rejects int32; ours must behave the same, not read ints as floats.
  let message = "";
  try {
    tf.tidy(() =>
      tf.matMul(tf.tensor2d([[1, 2]], [1, 2], "int32"), tf.tensor2d([[3], [4]], [2, 1], "int32"))
    );
  } catch (e) {
    message = (e as Error).message;
  }
  assert(/float32/.test(message), `expected the stock float32-only error, got "${message}"`);
  restoreMatmulKernels();
});

Deno.test("registerMatmulKernels() rejects unknown options", () => {
  let err: unknown;
  try {
    registerMatmulKernels({ blass: null } as never);
  } catch (e) {
    err = e;
  }
  assert(err instanceof TypeError && /blass/.test(err.message));
});

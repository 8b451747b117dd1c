import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { nativeKernels, roundToBf16, typescriptKernels } from "../../lib/engine/native.ts";
import { loadBlas } from "../../lib/engine/blas.ts";
import { mulberry32 } from "../../lib/train/random.ts";

const native = nativeKernels();
const noBf16 = native.bf16Gemm
  ? false
  : native.kind !== "native"
  ? `native kernels not built (${native.source}): run scripts/setup.sh`
  : "this CPU lacks avx512_bf16: gemmBf16 runs the TypeScript reference only";
const blas = loadBlas();

/** One GEMM problem: sizes, transposes, scalars and the padding of each leading dimension. */
interface Case {
  m: number;
  n: number;
  k: number;
  tA: boolean;
  tB: boolean;
  alpha: number;
  beta: number;
  pad: number;
}

/** Random A, B, C for `c` (C filled with NaN when beta is 0: it must not be read). */
function operands(c: Case, seed: number) {
  const rand = mulberry32(seed);
  const lda = (c.tA ? c.m : c.k) + c.pad, ldb = (c.tB ? c.k : c.n) + c.pad, ldc = c.n + c.pad;
  const rowsA = c.tA ? c.k : c.m, rowsB = c.tB ? c.n : c.k;
  const a = Float32Array.from({ length: rowsA * lda }, () => rand() * 2 - 1);
  const b = Float32Array.from({ length: rowsB * ldb }, () => rand() * 2 - 1);
  const c0 = Float32Array.from({ length: c.m * ldc }, () => (c.beta === 0 ? NaN : rand() * 2 - 1));
  return { a, b, c0, lda, ldb, ldc };
}

/** Per C element: |alpha|·Σ|a·b| over bf16-rounded inputs (plus |beta·C|), the scale of its rounding error. */
function magnitudes(c: Case, o: ReturnType<typeof operands>): Float64Array {
  const out = new Float64Array(c.m * c.n);
  const ar = o.a.map(roundToBf16), br = o.b.map(roundToBf16);
  for (let i = 0; i < c.m; i++) {
    for (let j = 0; j < c.n; j++) {
      let s = 0;
      for (let p = 0; p < c.k; p++) {
        s += Math.abs(ar[c.tA ? p * o.lda + i : i * o.lda + p] * br[c.tB ? j * o.ldb + p : p * o.ldb + j]);
      }
      out[i * c.n + j] = Math.abs(c.alpha) * s + (c.beta === 0 ? 0 : Math.abs(c.beta * o.c0[i * o.ldc + j]));
    }
  }
  return out;
}

function run(kernels: typeof native, c: Case, o: ReturnType<typeof operands>): Float32Array {
  const out = o.c0.slice();
  kernels.gemmBf16(c.tA, c.tB, c.m, c.n, c.k, c.alpha, o.a, o.lda, o.b, o.ldb, c.beta, out, o.ldc);
  return out;
}

/** Worst |x - y| / (scale + tiny) over C's [M, N] block; also checks the padding columns were not written. */
function worstError(
  c: Case,
  o: ReturnType<typeof operands>,
  x: Float32Array,
  y: Float32Array,
  scale: Float64Array,
) {
  let worst = 0;
  for (let i = 0; i < c.m; i++) {
    for (let j = 0; j < o.ldc; j++) {
      const idx = i * o.ldc + j;
      if (j >= c.n) {
        assert(Object.is(x[idx], o.c0[idx]), `padding C[${i}][${j}] was written`);
        continue;
      }
      assert(Number.isFinite(x[idx]), `C[${i}][${j}] = ${x[idx]}`);
      worst = Math.max(worst, Math.abs(x[idx] - y[idx]) / (scale[i * c.n + j] + 1e-30));
    }
  }
  return worst;
}

const SIZES = [1, 3, 17, 33, 257];

/** Every transpose combination on odd sizes (each size in every position), alpha/beta and padded leading dims. */
function cases(): Case[] {
  const out: Case[] = [];
  let t = 0;
  for (const m of SIZES) {
    for (const n of SIZES) {
      // K rotates through SIZES so each (M, N) pair meets a different depth; 257 crosses no block but is odd.
      const k = SIZES[(SIZES.indexOf(m) + 2 * SIZES.indexOf(n)) % SIZES.length];
      const tA = (t & 1) === 1, tB = (t & 2) === 2;
      out.push({
        m,
        n,
        k,
        tA,
        tB,
        alpha: [1, -0.75, 2.5][t % 3],
        beta: [0, 1, -0.5, 0.25][t % 4],
        pad: t % 3,
      });
      t++;
    }
  }
  // Several K blocks (512), M blocks (264 rows), N blocks (4096 columns) and threads, in all four layouts.
  for (let q = 0; q < 4; q++) {
    out.push({ m: 70, n: 300, k: 1100, tA: (q & 1) === 1, tB: (q & 2) === 2, alpha: 1, beta: q % 2, pad: 1 });
  }
  out.push({ m: 300, n: 40, k: 515, tA: false, tB: true, alpha: 0.5, beta: 0, pad: 0 });
  out.push({ m: 13, n: 4200, k: 41, tA: true, tB: false, alpha: 1, beta: 2, pad: 5 });
  // More rows than one A block and, per thread, more columns than one B block (the general blocked path).
  out.push({ m: 270, n: 8250, k: 5, tA: true, tB: true, alpha: 1, beta: 0.5, pad: 2 });
  return out;
}

Deno.test({
  name:
    "native gemmBf16 equals the TypeScript bf16 reference (every transpose, odd sizes, alpha/beta, padded ld)",
  ignore: noBf16 !== false,
  fn() {
    let seed = 1;
    for (const c of cases()) {
      const o = operands(c, seed++);
      const x = run(native, c, o), y = run(typescriptKernels, c, o);
      // Both round the inputs to bf16 and sum exact products in float32, in different orders.
      const worst = worstError(c, o, x, y, magnitudes(c, o));
      assert(worst <= 1e-5, `${JSON.stringify(c)}: relative error ${worst}`);
    }
  },
});

Deno.test({
  name: "native gemmBf16 is within bf16 rounding of fp32 sgemm, and does round (differs from it)",
  ignore: noBf16 !== false || !blas,
  fn() {
    let seed = 100, differs = 0;
    for (const c of cases().filter((_, i) => i % 3 === 0)) {
      const o = operands(c, seed++);
      const x = run(native, c, o);
      const y = o.c0.slice();
      blas!.sgemm(c.tA, c.tB, c.m, c.n, c.k, c.alpha, o.a, o.lda, o.b, o.ldb, c.beta, y, o.ldc);
      const worst = worstError(c, o, x, y, magnitudes(c, o));
      assert(worst <= 1e-2, `${JSON.stringify(c)}: relative error ${worst} vs sgemm`);
      if (worst > 1e-5) differs++;
    }
    assert(differs > 0, "gemmBf16 gave fp32 results: the inputs were not rounded to bf16");
  },
});

Deno.test({
  name: "native gemmBf16: degenerate sizes (M, N or K = 0, alpha = 0) follow BLAS",
  ignore: noBf16 !== false,
  fn() {
    for (const kernels of [native, typescriptKernels]) {
      const a = new Float32Array([NaN, NaN]), b = new Float32Array([NaN, NaN]);
      // M = 0 and N = 0: nothing is written.
      const c = new Float32Array([7, 8]);
      kernels.gemmBf16(false, false, 0, 2, 1, 1, a, 1, b, 2, 0, c, 2);
      kernels.gemmBf16(false, false, 2, 0, 1, 1, a, 1, b, 1, 0, c, 1);
      assertEquals(Array.from(c), [7, 8], kernels.kind);
      // K = 0: C = beta·C; beta = 0 clears C even when it holds NaN.
      kernels.gemmBf16(false, false, 1, 2, 0, 1, a, 1, b, 2, 0.5, c, 2);
      assertEquals(Array.from(c), [3.5, 4], kernels.kind);
      const d = new Float32Array([NaN, NaN]);
      kernels.gemmBf16(false, false, 1, 2, 0, 1, a, 1, b, 2, 0, d, 2);
      assertEquals(Array.from(d), [0, 0], kernels.kind);
      // alpha = 0: A and B (NaN here) are not read.
      kernels.gemmBf16(false, false, 1, 2, 1, 0, a, 1, b, 2, 2, c, 2);
      assertEquals(Array.from(c), [7, 8], kernels.kind);
      // Subnormal inputs and sums count as zero (vdpbf16ps); normal tiny values do not.
      const e = new Float32Array(3);
      const tiny = new Float32Array([1e-39, 1, 1e-20, 1e-20, 2 ** -100, 2 ** -20]);
      kernels.gemmBf16(
        false,
        false,
        1,
        1,
        1,
        1,
        tiny.subarray(0),
        1,
        tiny.subarray(1),
        1,
        0,
        e.subarray(0),
        1,
      );
      kernels.gemmBf16(
        false,
        false,
        1,
        1,
        1,
        1,
        tiny.subarray(2),
        1,
        tiny.subarray(3),
        1,
        0,
        e.subarray(1),
        1,
      );
      kernels.gemmBf16(
        false,
        false,
        1,
        1,
        1,
        1,
        tiny.subarray(4),
        1,
        tiny.subarray(5),
        1,
        0,
        e.subarray(2),
        1,
      );
      assertEquals(Array.from(e), [0, 0, 2 ** -120], kernels.kind);
    }
  },
});

Deno.test("roundToBf16 rounds to nearest even and keeps specials", () => {
  assertEquals(roundToBf16(1), 1);
  assertEquals(roundToBf16(1 + 2 ** -8), 1); // tie, even mantissa stays
  assertEquals(roundToBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6); // tie, odd mantissa rounds up
  assertEquals(roundToBf16(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7); // above the tie
  assertEquals(roundToBf16(-3.1), -3.09375);
  assertEquals(roundToBf16(Infinity), Infinity);
  assertEquals(roundToBf16(-0) === 0 && Object.is(roundToBf16(-0), -0), true);
  assertEquals(roundToBf16(3.4e38), Infinity); // above bf16's largest finite value: overflows like the hardware
  assert(Number.isNaN(roundToBf16(NaN)));
});

Deno.test("TypeScript gemmBf16 rounds the inputs to bf16 and accumulates in float32", () => {
  // [1+2^-7+2^-9, 2] . [1, 1]: bf16 makes the first 1+2^-7 (2^-9 is below its precision).
  const a = new Float32Array([1 + 2 ** -7 + 2 ** -9, 2]), b = new Float32Array([1, 1]);
  const c = new Float32Array(1);
  typescriptKernels.gemmBf16(false, false, 1, 1, 2, 1, a, 2, b, 1, 0, c, 1);
  assertEquals(c[0], 3 + 2 ** -7);
  // 2x2 NT with alpha and beta: C = 2·A·Bᵀ − C.
  const c2 = new Float32Array([1, 1, 1, 1]);
  typescriptKernels.gemmBf16(
    false,
    true,
    2,
    2,
    2,
    2,
    new Float32Array([1, 2, 3, 4]),
    2,
    new Float32Array([5, 6, 7, 8]),
    2,
    -1,
    c2,
    2,
  );
  assertEquals(Array.from(c2), [33, 45, 77, 105]);
});

Deno.test("gemmBf16 refuses arrays too short for the sizes (naming the operand) and bad leading dimensions", () => {
  for (const kernels of [native, typescriptKernels]) {
    const a = new Float32Array(6), b = new Float32Array(6), c = new Float32Array(4);
    assertThrows(
      () => kernels.gemmBf16(false, false, 2, 2, 4, 1, a, 4, b, 2, 0, c, 2),
      RangeError,
      "A has 6",
    );
    assertThrows(
      () => kernels.gemmBf16(false, false, 2, 2, 3, 1, a, 3, b, 3, 0, c, 2),
      RangeError,
      "B has 6",
    );
    assertThrows(
      () => kernels.gemmBf16(false, false, 2, 3, 3, 1, a, 3, b, 1, 0, c, 3),
      RangeError,
      "ldB = 1",
    );
    assertThrows(
      () => kernels.gemmBf16(false, false, 2, 2, 3, 1, a, 3, b, 2, 0, c, 3),
      RangeError,
      "C has 4",
    );
  }
});

/**
 * Replacement wasm kernels for `BatchMatMul` and `_FusedMatMul`.
 *
 * With BLAS: `cblas_sgemm` runs directly on the wasm heap (zero copy,
 * RUNTIME.md §4 recipe 2), for every transpose combination and tfjs batch
 * broadcasting; `_FusedMatMul` then adds the bias and applies the activation.
 * {@linkcode setMatmulPrecision}("bfloat16") swaps sgemm for the native bf16 GEMM (with or without BLAS).
 * Without BLAS: the stock wasm kernel, but transposes are done explicitly first
 * because stock wasm with transpose flags is 13-20x slower (RUNTIME.md §4).
 * int32 (and anything else unusual) goes to the original kernel.
 *
 * Dimension legend: `[...batch, M, K] @ [...batch, K, N] -> [...batch, M, N]`.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import type { Blas } from "./blas.ts";
import { nativeKernels } from "./native.ts";
import { type KernelArgs, sizeOf, type TensorInfo, type WasmBackend } from "./_wasm_backend.ts";
import { custom, defineOptions, type FieldsOf } from "../options/schema.ts";

/** Options for {@linkcode registerMatmulKernels}. */
export interface MatmulKernelOptions {
  /** BLAS to run the matmuls (`null`: stock wasm with explicit transposes). @default {null} */
  blas?: Blas | null;
}

/** The schema of {@linkcode registerMatmulKernels}'s options. */
export const matmulKernelsSchema = defineOptions(
  "registerMatmulKernels",
  {
    blas: custom<Blas | null>(
      "BLAS to run the matmuls (null: stock wasm with explicit transposes).",
      "a Blas from loadBlas() or null",
      (v) => v === null || (typeof v === "object" && typeof (v as Blas).sgemm === "function"),
      { example: null, default: null },
    ),
  } satisfies FieldsOf<MatmulKernelOptions>,
);

type KernelFunc = (args: KernelArgs) => TensorInfo | TensorInfo[];
const NAMES = ["BatchMatMul", "_FusedMatMul"] as const;
const originals = new Map<string, tf.KernelConfig>();
let transposeKernel: tf.KernelConfig | undefined;
let active: "blas" | "explicit-transpose" | "stock" = "stock";

/** Precision of the replaced kernels' products: see {@linkcode setMatmulPrecision}. */
export type MatmulPrecision = "float32" | "bfloat16";
let precision: MatmulPrecision = "float32";

/**
 * Sets the precision of the float32 matmuls run by the replaced kernels ({@linkcode registerMatmulKernels},
 * with or without BLAS): `"float32"` (the default) runs `cblas_sgemm`; `"bfloat16"` runs the native
 * AVX512_BF16 GEMM (`nb_gemm_bf16`: inputs rounded to bfloat16, float32 accumulation and output, about
 * twice sgemm's speed), the compute dtype of QLoRA. Throws when the bf16 kernel is unavailable, saying why.
 *
 * @example
 * ```ts
 * import { matmulPrecision, setMatmulPrecision } from "./matmul_kernels.ts";
 * setMatmulPrecision("float32");
 * if (matmulPrecision() !== "float32") throw new Error("expected float32");
 * ```
 */
export function setMatmulPrecision(p: MatmulPrecision): void {
  if (p !== "float32" && p !== "bfloat16") {
    throw new RangeError(
      `setMatmulPrecision(): precision must be "float32" or "bfloat16", received ${String(p)}`,
    );
  }
  if (p === "bfloat16") {
    const k = nativeKernels();
    if (!k.bf16Gemm) {
      throw new Error(
        k.kind !== "native"
          ? `setMatmulPrecision("bfloat16"): the native kernel library is not available (${k.source}); ` +
            'build it with scripts/setup.sh (needs gcc) and grant --allow-ffi, or keep "float32"'
          : 'setMatmulPrecision("bfloat16"): this CPU lacks avx512_bf16, which the bf16 GEMM needs; ' +
            'keep "float32"',
      );
    }
  }
  precision = p;
}

/**
 * The precision set by {@linkcode setMatmulPrecision} (`"float32"` by default).
 *
 * @example
 * ```ts
 * import { matmulPrecision } from "./matmul_kernels.ts";
 * if (!["float32", "bfloat16"].includes(matmulPrecision())) throw new Error();
 * ```
 */
export function matmulPrecision(): MatmulPrecision {
  return precision;
}

type Gemm = Blas["sgemm"];

/** The GEMM for the current precision: `blas.sgemm`, or the native bf16 GEMM. */
function gemmFor(blas: Blas | null): Gemm {
  if (precision === "bfloat16") {
    const k = nativeKernels();
    return (tA, tB, m, n, kk, alpha, a, lda, b, ldb, beta, c, ldc) =>
      k.gemmBf16(tA, tB, m, n, kk, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  return blas!.sgemm;
}

function original(name: string): KernelFunc {
  return originals.get(name)!.kernelFunc as unknown as KernelFunc;
}

/** Batch index pairs for broadcasting `aBatch` and `bBatch` to `outBatch` (tfjs/numpy rules). */
function batchPairs(aBatch: number[], bBatch: number[], outBatch: number[]): [Int32Array, Int32Array] {
  const n = sizeOf(outBatch), r = outBatch.length;
  const ia = new Int32Array(n), ib = new Int32Array(n);
  const stridesFor = (shape: number[]) => {
    const s = new Array<number>(r).fill(0);
    let acc = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      const od = d + r - shape.length;
      s[od] = shape[d] === 1 ? 0 : acc;
      acc *= shape[d];
    }
    return s;
  };
  const sa = stridesFor(aBatch), sb = stridesFor(bBatch);
  for (let i = 0; i < n; i++) {
    let rem = i, oa = 0, ob = 0;
    for (let d = r - 1; d >= 0; d--) {
      const idx = rem % outBatch[d];
      rem = (rem - idx) / outBatch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    ia[i] = oa;
    ib[i] = ob;
  }
  return [ia, ib];
}

interface GemmPlan {
  m: number;
  n: number;
  k: number;
  outShape: number[];
}

/** Shapes for `a @ b`, or null when the original kernel should handle (and report) it. */
function plan(a: TensorInfo, b: TensorInfo, tA: boolean, tB: boolean): GemmPlan | null {
  if (a.dtype !== "float32" || b.dtype !== "float32") return null;
  const ra = a.shape.length, rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const m = tA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = tA ? a.shape[ra - 2] : a.shape[ra - 1];
  const k2 = tB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = tB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== k2) return null;
  let outBatch: number[];
  try {
    outBatch = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  } catch {
    return null;
  }
  return { m, n, k, outShape: [...outBatch, m, n] };
}

/** `a @ b` with cblas_sgemm (or the bf16 GEMM, see {@linkcode setMatmulPrecision}) on the heap: the new output. */
function blasGemm(
  blas: Blas | null,
  be: WasmBackend,
  a: TensorInfo,
  b: TensorInfo,
  tA: boolean,
  tB: boolean,
  p: GemmPlan,
) {
  const { m, n, k, outShape } = p;
  const out = be.makeOutput(outShape, "float32");
  // Views only after makeOutput: the allocation may grow the heap and detach older views.
  const C = be.typedArrayFromHeap(out) as Float32Array;
  if (C.length === 0) return out;
  if (k === 0) {
    C.fill(0);
    return out;
  }
  const A = be.typedArrayFromHeap(a) as Float32Array, B = be.typedArrayFromHeap(b) as Float32Array;
  const lda = tA ? m : k, ldb = tB ? k : n;
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2), outBatch = outShape.slice(0, -2);
  const nA = sizeOf(aBatch), nB = sizeOf(bBatch), nOut = sizeOf(outBatch);
  const gemm = gemmFor(blas);
  if (nB === 1 && !tA && nA === nOut) {
    // [nA*M, K] @ [K, N]: one call for the common x[B,T,D] @ W[D,N].
    gemm(false, tB, nA * m, n, k, 1, A, lda, B, ldb, 0, C, n);
    return out;
  }
  const [ia, ib] = batchPairs(aBatch, bBatch, outBatch);
  const sa = m * k, sb = k * n, sc = m * n;
  for (let i = 0; i < nOut; i++) {
    gemm(
      tA,
      tB,
      m,
      n,
      k,
      1,
      A.subarray(ia[i] * sa, ia[i] * sa + sa),
      lda,
      B.subarray(ib[i] * sb, ib[i] * sb + sb),
      ldb,
      0,
      C.subarray(i * sc, i * sc + sc),
      n,
    );
  }
  return out;
}

function zeros(be: WasmBackend, shape: number[]): TensorInfo {
  const out = be.makeOutput(shape, "float32");
  be.typedArrayFromHeap(out).fill(0);
  return out;
}

/** Transposes the last two axes with the stock wasm Transpose kernel (caller disposes). */
function swapLastTwo(be: WasmBackend, x: TensorInfo): TensorInfo {
  const r = x.shape.length;
  const perm = [...Array(r).keys()];
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return transposeKernel!.kernelFunc({ inputs: { x }, backend: be as never, attrs: { perm } }) as TensorInfo;
}

/** Copies `x`'s matrices to the full broadcast batch (stock wasm only handles a batch of 1 or of all). */
function expandBatch(be: WasmBackend, x: TensorInfo, idx: Int32Array, outBatch: number[]): TensorInfo {
  const mat = x.shape.slice(-2), size = sizeOf(mat);
  const out = be.makeOutput([...outBatch, ...mat], "float32");
  const src = be.typedArrayFromHeap(x) as Float32Array, dst = be.typedArrayFromHeap(out) as Float32Array;
  for (let i = 0; i < idx.length; i++) dst.set(src.subarray(idx[i] * size, idx[i] * size + size), i * size);
  return out;
}

/** Stock wasm NN matmul after explicit transposes (and explicit batch broadcasting when needed). */
function explicitGemm(be: WasmBackend, a: TensorInfo, b: TensorInfo, tA: boolean, tB: boolean): TensorInfo {
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
  const nOut = sizeOf(outBatch), nA = sizeOf(aBatch), nB = sizeOf(bBatch);
  const expA = nA !== 1 && (nA !== nOut || aBatch.length !== outBatch.length);
  const expB = nB !== 1 && (nB !== nOut || bBatch.length !== outBatch.length);
  if (expA || expB) {
    const [ia, ib] = batchPairs(aBatch, bBatch, outBatch);
    const a1 = expA ? expandBatch(be, a, ia, outBatch) : a;
    const b1 = expB ? expandBatch(be, b, ib, outBatch) : b;
    try {
      return explicitGemm(be, a1, b1, tA, tB);
    } finally {
      if (expA) be.disposeData(a1.dataId);
      if (expB) be.disposeData(b1.dataId);
    }
  }
  const a2 = tA ? swapLastTwo(be, a) : a;
  const b2 = tB ? swapLastTwo(be, b) : b;
  try {
    return original("BatchMatMul")({
      inputs: { a: a2, b: b2 },
      backend: be,
      attrs: { transposeA: false, transposeB: false },
    }) as TensorInfo;
  } finally {
    if (tA) be.disposeData(a2.dataId);
    if (tB) be.disposeData(b2.dataId);
  }
}

/** Strides (in elements) of `shape` broadcast to `outShape`, right-aligned; 0 on broadcast dims. */
function broadcastStrides(shape: number[], outShape: number[]): number[] | null {
  const r = outShape.length;
  if (shape.length > r) {
    if (sizeOf(shape.slice(0, shape.length - r)) !== 1) return null;
    shape = shape.slice(shape.length - r);
  }
  const s = new Array<number>(r).fill(0);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const od = d + r - shape.length;
    if (shape[d] !== 1 && shape[d] !== outShape[od]) return null;
    s[od] = shape[d] === 1 ? 0 : acc;
    acc *= shape[d];
  }
  return s;
}

/** Calls `f(outIndex, srcIndex)` over `outShape` with `src` broadcast by `strides`. */
function forEachBroadcast(outShape: number[], strides: number[], f: (o: number, s: number) => void) {
  const r = outShape.length;
  if (r === 0) return f(0, 0);
  const inner = outShape[r - 1], sIn = strides[r - 1];
  const outer = sizeOf(outShape) / Math.max(inner, 1);
  const idx = new Array<number>(r).fill(0);
  let base = 0, o = 0;
  for (let i = 0; i < outer; i++) {
    for (let j = 0; j < inner; j++) f(o++, base + j * sIn);
    for (let d = r - 2; d >= 0; d--) {
      idx[d]++;
      base += strides[d];
      if (idx[d] < outShape[d]) break;
      base -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
}

const ACTIVATIONS = ["linear", "relu", "relu6", "prelu", "leakyrelu", "sigmoid", "elu"];

/** Adds `bias` and applies `activation` in place on `out` (views taken here, after all allocations). */
function epilogue(
  be: WasmBackend,
  out: TensorInfo,
  attrs: Record<string, unknown>,
  bias?: TensorInfo,
  w?: TensorInfo,
) {
  const C = be.typedArrayFromHeap(out) as Float32Array;
  if (bias) {
    const bv = be.typedArrayFromHeap(bias) as Float32Array;
    const n = out.shape[out.shape.length - 1];
    if (bv.length === n && bias.shape[bias.shape.length - 1] === n) {
      for (let o = 0; o < C.length; o += n) for (let j = 0; j < n; j++) C[o + j] += bv[j];
    } else {
      forEachBroadcast(out.shape, broadcastStrides(bias.shape, out.shape)!, (o, s) => C[o] += bv[s]);
    }
  }
  const act = (attrs.activation as string | undefined) ?? "linear";
  switch (act) {
    case "linear":
      return;
    case "relu":
      for (let i = 0; i < C.length; i++) if (C[i] < 0) C[i] = 0;
      return;
    case "relu6":
      for (let i = 0; i < C.length; i++) C[i] = C[i] < 0 ? 0 : C[i] > 6 ? 6 : C[i];
      return;
    case "elu":
      for (let i = 0; i < C.length; i++) if (C[i] < 0) C[i] = Math.expm1(C[i]);
      return;
    case "sigmoid":
      for (let i = 0; i < C.length; i++) C[i] = 1 / (1 + Math.exp(-C[i]));
      return;
    case "leakyrelu": {
      const alpha = (attrs.leakyreluAlpha as number | undefined) ?? 0.2;
      for (let i = 0; i < C.length; i++) if (C[i] < 0) C[i] *= alpha;
      return;
    }
    case "prelu": {
      const wv = be.typedArrayFromHeap(w!) as Float32Array;
      forEachBroadcast(out.shape, broadcastStrides(w!.shape, out.shape)!, (o, s) => {
        if (C[o] < 0) C[o] *= wv[s];
      });
      return;
    }
  }
}

function makeBatchMatMul(blas: Blas | null): KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const tA = Boolean(args.attrs?.transposeA), tB = Boolean(args.attrs?.transposeB);
    const be = args.backend as WasmBackend;
    const p = plan(a, b, tA, tB);
    if (!p) return original("BatchMatMul")(args);
    if (p.k === 0) return zeros(be, p.outShape); // stock wasm leaves garbage here
    if (blas || precision === "bfloat16") return blasGemm(blas, be, a, b, tA, tB, p);
    return explicitGemm(be, a, b, tA, tB);
  };
}

function makeFusedMatMul(blas: Blas | null): KernelFunc {
  return (args) => {
    const { a, b, bias, preluActivationWeights: w } = args.inputs as Record<string, TensorInfo | undefined>;
    const attrs = args.attrs ?? {};
    const tA = Boolean(attrs.transposeA), tB = Boolean(attrs.transposeB);
    const be = args.backend as WasmBackend;
    const p = plan(a!, b!, tA, tB);
    const act = (attrs.activation as string | undefined) ?? "linear";
    const ok = p && ACTIVATIONS.includes(act) && (!bias || bias.dtype === "float32") &&
      (!bias || broadcastStrides(bias.shape, p.outShape)) &&
      (act !== "prelu" || (w && w.dtype === "float32" && broadcastStrides(w.shape, p.outShape)));
    if (!ok) return original("_FusedMatMul")(args);
    const out = blas || precision === "bfloat16"
      ? blasGemm(blas, be, a!, b!, tA, tB, p!)
      : p!.k === 0
      ? zeros(be, p!.outShape)
      : explicitGemm(be, a!, b!, tA, tB);
    epilogue(be, out, attrs, bias, w);
    return out;
  };
}

/**
 * Replaces the wasm `BatchMatMul` and `_FusedMatMul` kernels (idempotent; call
 * again with other options to switch between the BLAS and explicit-transpose
 * paths). The originals are kept for fallback and for
 * {@linkcode restoreMatmulKernels}.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
 * import { registerMatmulKernels, restoreMatmulKernels } from "./matmul_kernels.ts";
 * await tf.setBackend("wasm");
 * registerMatmulKernels({ blas: null }); // explicit transposes, no BLAS
 * const c = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5, 6], [7, 8]]), false, true);
 * if (c.dataSync().join() !== "17,23,39,53") throw new Error("wrong matmul");
 * restoreMatmulKernels();
 * ```
 */
export function registerMatmulKernels(options: MatmulKernelOptions = {}): void {
  matmulKernelsSchema.parse(options);
  const blas = options.blas ?? null;
  if (originals.size === 0) {
    for (const name of NAMES) {
      const k = tf.getKernel(name, "wasm");
      if (!k) {
        throw new Error(
          `registerMatmulKernels(): wasm kernel ${name} is not registered; import tfjs-backend-wasm`,
        );
      }
      originals.set(name, k);
    }
    transposeKernel = tf.getKernel("Transpose", "wasm");
  }
  const funcs = { BatchMatMul: makeBatchMatMul(blas), _FusedMatMul: makeFusedMatMul(blas) };
  for (const name of NAMES) {
    if (tf.getKernel(name, "wasm")) tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      kernelName: name,
      backendName: "wasm",
      kernelFunc: funcs[name] as unknown as tf.KernelFunc,
      // A fresh wasm backend instance must still set up the original's cwrap bindings.
      setupFunc: originals.get(name)!.setupFunc,
    });
  }
  active = blas ? "blas" : "explicit-transpose";
}

/**
 * Puts the stock wasm matmul kernels back (no-op when they were never replaced).
 *
 * @example
 * ```ts
 * import { matmulKernelMode, restoreMatmulKernels } from "./matmul_kernels.ts";
 * restoreMatmulKernels();
 * if (matmulKernelMode() !== "stock") throw new Error("expected stock kernels");
 * ```
 */
export function restoreMatmulKernels(): void {
  for (const [name, k] of originals) {
    if (tf.getKernel(name, "wasm")) tf.unregisterKernel(name, "wasm");
    tf.registerKernel(k);
  }
  active = "stock";
}

/**
 * Which wasm matmul kernels are active: `"blas"`, `"explicit-transpose"` or `"stock"`.
 *
 * @example
 * ```ts
 * import { matmulKernelMode } from "./matmul_kernels.ts";
 * if (!["blas", "explicit-transpose", "stock"].includes(matmulKernelMode())) throw new Error();
 * ```
 */
export function matmulKernelMode(): "blas" | "explicit-transpose" | "stock" {
  return active;
}

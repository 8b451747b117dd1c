/**
 * nbtune's small native kernel library (`lib/engine/native/nbtune_kernels.c`, compiled by
 * `scripts/setup.sh` into `.tools/native/libnbtune_kernels.so`) loaded through Deno FFI, with a
 * TypeScript fallback for every kernel giving the same results. The library is optional: when it
 * (or gcc, or the `ffi` permission) is missing, everything runs on the fallbacks, slower, and
 * {@linkcode nativeKernels} says so once on the console.
 *
 * Environment: `NBTUNE_NATIVE=off` disables it, `NBTUNE_NATIVE_LIB=/path/lib.so` loads that file.
 * @module
 */
import { envGet, ffiGranted } from "./permissions.ts";
import type { Gemm } from "./blas.ts";

const SYMBOLS = {
  nb_version: { parameters: [], result: "i32" },
  nb_max_threads: { parameters: [], result: "i32" },
  nb_dequant4bit: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i64", "i32", "i32"],
    result: "void",
  },
  nb_cross_entropy: {
    parameters: ["buffer", "buffer", "buffer", "i64", "i64", "f32", "buffer", "buffer", "i32"],
    result: "void",
  },
  nb_quant8: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i64", "i64", "i64", "i32"],
    result: "void",
  },
  nb_dequant8: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i64", "i64", "i64", "i32"],
    result: "void",
  },
  nb_adam8bit: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i64",
      "i64",
      "i64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "i32",
    ],
    result: "void",
  },
  nb_bf16_supported: { parameters: [], result: "i32" },
  nb_gemm_bf16: {
    parameters: [
      "i32",
      "i32",
      "i64",
      "i64",
      "i64",
      "f32",
      "buffer",
      "i64",
      "buffer",
      "i64",
      "f32",
      "buffer",
      "i64",
      "i32",
    ],
    result: "i32",
  },
} as const;

const ABI_VERSION = 4;

/** The kernels, native or TypeScript. */
export interface NativeKernels {
  /** `"native"` when the compiled library runs them, else `"typescript"`. */
  kind: "native" | "typescript";
  /** Where the library was loaded from, or why it was not. */
  source: string;
  /**
   * Blockwise 4-bit dequantization into `out` (which may be a view of the wasm heap):
   * `out[i] = qmap[code_i] * absmax[i >> log2(blocksize)]`, high nibble first.
   */
  dequant4bit(
    packed: Uint8Array,
    absmax: Float32Array,
    qmap: Float32Array,
    out: Float32Array,
    blocksize: number,
  ): void;
  /**
   * Row-wise cross-entropy: fills `rowLoss[n] = w[n]·(logsumexp(z[n]) − z[n][y[n]])` and, when
   * `grad` is given, `grad = g·w[n]·(softmax(z[n]) − onehot(y[n]))`. `z`, `grad`: `[N, V]`.
   */
  crossEntropy(
    z: Float32Array,
    y: Int32Array,
    w: Float32Array,
    vocab: number,
    g: number,
    rowLoss: Float32Array,
    grad: Float32Array | null,
  ): void;
  /**
   * Blockwise 8-bit quantization with a 256-entry dynamic map: per block `absmax[k] = max |x|`, then
   * `codes[i]` = the nearest code to `x[i] / absmax[k]` (binary search of the 255 midpoints `th`, ties
   * to the lower code). Blocks: runs of `blocksize`, or with `rowLength` each row of that many
   * elements split into `ceil(rowLength / blocksize)` nearly equal runs. `x`, `codes`: `[N]`.
   */
  quantize8(
    x: Float32Array,
    th: Float32Array,
    codes: Uint8Array,
    absmax: Float32Array,
    blocksize: number,
    rowLength?: number,
  ): void;
  /** `out[i] = code[codes[i]] · absmax[block of i]`, the layout of {@linkcode NativeKernels.quantize8}. */
  dequantize8(
    codes: Uint8Array,
    absmax: Float32Array,
    code: Float32Array,
    out: Float32Array,
    blocksize: number,
    rowLength?: number,
  ): void;
  /**
   * One Adam step on blockwise 8-bit moments, in place: dequantizes `m` (signed map) and `v`
   * (unsigned map), updates them with the gradient `g` (`m = β1·m + (1−β1)·g`, `v = β2·v + (1−β2)·g²`),
   * writes `dir = m / bc1 / (√v / sbc2 + eps)` and requantizes `m` and `v` with fresh per-block
   * absmax (nearest code). `g`, `dir`, codes: `[N]`; absmax: one per block.
   */
  adam8bit(
    g: Float32Array,
    m: { codes: Uint8Array; absmax: Float32Array },
    v: { codes: Uint8Array; absmax: Float32Array },
    maps: Adam8bitMaps,
    dir: Float32Array,
    h: Adam8bitStep,
  ): void;
  /**
   * Whether {@linkcode NativeKernels.gemmBf16} runs natively (the library is loaded and the CPU has
   * AVX512_BF16); when false it runs the slow TypeScript reference.
   */
  bf16Gemm: boolean;
  /**
   * `C = alpha·op(A)·op(B) + beta·C` with `cblas_sgemm`'s row-major semantics (`op(A)`: `[M, K]`,
   * `op(B)`: `[K, N]`, `C`: `[M, N]` with leading dimensions `lda`, `ldb`, `ldc`), but with the inputs
   * rounded to bfloat16 (round to nearest even) and the products accumulated in float32. As in
   * AVX512_BF16's `vdpbf16ps`, subnormal inputs and partial sums (below 2^-126 in magnitude) count as
   * zero. `C` is not read when `beta` is 0. The arrays may be views of the wasm heap.
   */
  gemmBf16: Gemm;
}

/** The dynamic maps of {@linkcode NativeKernels.adam8bit}: 256 codes and their 255 midpoints each. */
export interface Adam8bitMaps {
  /** Signed map (first moment). */
  signed: Float32Array;
  /** Unsigned map (second moment). */
  unsigned: Float32Array;
  /** Midpoints of `signed`. */
  signedTh: Float32Array;
  /** Midpoints of `unsigned`. */
  unsignedTh: Float32Array;
}

/** Scalars and block layout of one {@linkcode NativeKernels.adam8bit} step. */
export interface Adam8bitStep {
  beta1: number;
  beta2: number;
  /** `1 − β1^t`. */
  bc1: number;
  /** `√(1 − β2^t)`. */
  sbc2: number;
  eps: number;
  blocksize: number;
  /** Blocks never straddle rows of this many elements (undefined: plain runs of `blocksize`). */
  rowLength?: number;
}

/** Number of 8-bit blocks of `n` elements (see {@linkcode NativeKernels.quantize8}). */
function blocks8(n: number, bs: number, row?: number): number {
  if (row === undefined || row >= n) return Math.ceil(n / bs);
  if (n % row !== 0) throw new RangeError(`8-bit blocks: ${n} elements are not rows of ${row}`);
  return (n / row) * Math.ceil(row / bs);
}

/** `[start, end)` of 8-bit block `k`. */
function block8(k: number, n: number, bs: number, row?: number): [number, number] {
  if (row === undefined || row >= n) return [k * bs, Math.min(n, k * bs + bs)];
  const per = Math.ceil(row / bs), r = Math.floor(k / per), j = k % per;
  return [r * row + Math.floor((j * row) / per), r * row + Math.floor(((j + 1) * row) / per)];
}

/** Index of the nearest code (binary search over the 255 midpoints). */
function nearest8(th: Float32Array, y: number): number {
  let lo = 0, hi = th.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (y > th[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Checks the arrays of an 8-bit kernel call (a short array would make the native kernel write out of bounds). */
function check8(
  what: string,
  n: number,
  bs: number,
  row: number | undefined,
  arrays: [string, number][],
): number {
  if (!Number.isInteger(bs) || bs < 1) {
    throw new RangeError(`${what}(): blocksize ${bs} must be an integer >= 1`);
  }
  if (row !== undefined && (!Number.isInteger(row) || row < 1)) {
    throw new RangeError(`${what}(): rowLength ${row} must be an integer >= 1`);
  }
  const k = blocks8(n, bs, row);
  for (const [name, len] of arrays) {
    const need = name.includes("absmax") ? k : n;
    if (len !== need) {
      throw new RangeError(
        `${what}(): ${name} has ${len} elements, expected ${need} (${n} elements, ${k} blocks)`,
      );
    }
  }
  return k;
}

/** Threads the native kernels use (OpenMP's default: all cores). */
let threads = 0;

/** Below this many elements a kernel runs on the calling thread: waking workers costs more. */
const PARALLEL_MIN_ELEMENTS = 1 << 22;

function threadsFor(elements: number, max: number): number {
  return elements < PARALLEL_MIN_ELEMENTS ? 1 : threads || max;
}

const F32 = new Float32Array(1), U32 = new Uint32Array(F32.buffer);

/**
 * `x` rounded to the nearest bfloat16 (ties to even), as a float32 value; NaN stays NaN.
 *
 * @example
 * ```ts
 * import { roundToBf16 } from "./native.ts";
 * // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie and rounds to even (1), 1 + 3·2^-9 rounds up.
 * if (roundToBf16(1 + 2 ** -8) !== 1 || roundToBf16(1 + 3 * 2 ** -9) !== 1 + 2 ** -7) throw new Error();
 * ```
 */
export function roundToBf16(x: number): number {
  F32[0] = x;
  if (x !== x) return F32[0];
  const u = U32[0];
  U32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return F32[0];
}

/** Smallest normal float32 (2^-126): `vdpbf16ps` treats anything smaller as zero. */
const MIN_NORMAL = 2 ** -126;

/** `x` rounded to bf16, subnormals as zero. */
function bf16Normal(x: number): number {
  const r = roundToBf16(x);
  return Math.abs(r) < MIN_NORMAL ? 0 : r;
}

/** Checks a GEMM's sizes against its arrays (a short array would make the native kernel read out of bounds). */
function checkGemm(
  tA: boolean,
  tB: boolean,
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  c: Float32Array,
  ldc: number,
): void {
  const need = (what: string, arr: Float32Array, rows: number, cols: number, ld: number) => {
    if (!Number.isInteger(ld) || ld < Math.max(1, cols)) {
      throw new RangeError(`gemmBf16(): ld${what} = ${ld} must be an integer >= ${Math.max(1, cols)}`);
    }
    const len = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
    if (arr.length < len) {
      throw new RangeError(
        `gemmBf16(): ${what} has ${arr.length} elements, needs ${len} (${rows} rows of ${cols}, stride ${ld})`,
      );
    }
  };
  for (const [name, v] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`gemmBf16(): ${name} = ${v} must be an integer >= 0`);
    }
  }
  need("A", a, tA ? k : m, tA ? m : k, lda);
  need("B", b, tB ? n : k, tB ? k : n, ldb);
  need("C", c, m, n, ldc);
}

/** Below this many multiply-adds the bf16 GEMM runs on one thread. */
const GEMM_PARALLEL_MIN_MACS = 1 << 18;

/** The TypeScript reference kernels (also the fallback). */
export const typescriptKernels: NativeKernels = {
  kind: "typescript",
  source: "TypeScript fallback",
  dequant4bit(packed, absmax, qmap, out, blocksize) {
    const n = out.length;
    for (let b = 0, start = 0; start < n; b++, start += blocksize) {
      const s = absmax[b];
      const end = Math.min(start + blocksize, n);
      let j = start >> 1;
      let i = start;
      for (; i + 1 < end; i += 2, j++) {
        const byte = packed[j];
        out[i] = qmap[byte >> 4] * s;
        out[i + 1] = qmap[byte & 15] * s;
      }
      if (i < end) out[i] = qmap[packed[j] >> 4] * s;
    }
  },
  crossEntropy(z, y, w, vocab, g, rowLoss, grad) {
    const rows = y.length;
    for (let r = 0; r < rows; r++) {
      const o = r * vocab;
      let m = -Infinity;
      for (let v = 0; v < vocab; v++) if (z[o + v] > m) m = z[o + v];
      let sum = 0;
      for (let v = 0; v < vocab; v++) sum += Math.exp(z[o + v] - m);
      const lse = Math.fround(m + Math.log(sum));
      const wr = w[r];
      rowLoss[r] = wr === 0 ? 0 : wr * (lse - z[o + y[r]]);
      if (grad) {
        const scale = Math.fround(g * wr);
        if (scale === 0) grad.fill(0, o, o + vocab);
        else {
          for (let v = 0; v < vocab; v++) grad[o + v] = scale * Math.exp(z[o + v] - lse);
          grad[o + y[r]] -= scale;
        }
      }
    }
  },
  quantize8(x, th, codes, absmax, bs, row) {
    const n = x.length;
    const k = check8("quantize8", n, bs, row, [["codes", codes.length], ["absmax", absmax.length]]);
    for (let b = 0; b < k; b++) {
      const [s, e] = block8(b, n, bs, row);
      let amax = 0;
      for (let i = s; i < e; i++) amax = Math.max(amax, Math.abs(x[i]));
      absmax[b] = amax;
      const inv = amax > 0 ? 1 / amax : 0;
      for (let i = s; i < e; i++) codes[i] = nearest8(th, x[i] * inv);
    }
  },
  dequantize8(codes, absmax, code, out, bs, row) {
    const n = out.length;
    const k = check8("dequantize8", n, bs, row, [["codes", codes.length], ["absmax", absmax.length]]);
    for (let b = 0; b < k; b++) {
      const [s, e] = block8(b, n, bs, row);
      const a = absmax[b];
      for (let i = s; i < e; i++) out[i] = code[codes[i]] * a;
    }
  },
  adam8bit(g, m, v, maps, dir, h) {
    const n = g.length, { beta1, beta2, bc1, sbc2, eps, blocksize: bs, rowLength: row } = h;
    const k = check8("adam8bit", n, bs, row, [
      ["dir", dir.length],
      ["m.codes", m.codes.length],
      ["v.codes", v.codes.length],
      ["m.absmax", m.absmax.length],
      ["v.absmax", v.absmax.length],
    ]);
    const { signed, unsigned, signedTh, unsignedTh } = maps;
    const fr = Math.fround;
    // One block's new moments (a block is at most `blocksize` long), float32 as the native kernel stores them.
    const mb = new Float32Array(Math.min(n, bs)), vb = new Float32Array(mb.length);
    for (let b = 0; b < k; b++) {
      const [s, e] = block8(b, n, bs, row);
      const am = m.absmax[b], av = v.absmax[b];
      let mmax = 0, vmax = 0;
      for (let i = s; i < e; i++) {
        const gi = g[i];
        mb[i - s] = beta1 * fr(signed[m.codes[i]] * am) + (1 - beta1) * gi;
        vb[i - s] = beta2 * fr(unsigned[v.codes[i]] * av) + (1 - beta2) * gi * gi;
        mmax = Math.max(mmax, Math.abs(mb[i - s]));
        vmax = Math.max(vmax, Math.abs(vb[i - s]));
      }
      m.absmax[b] = mmax, v.absmax[b] = vmax;
      const minv = mmax > 0 ? 1 / mmax : 0, vinv = vmax > 0 ? 1 / vmax : 0;
      for (let i = s; i < e; i++) {
        const mi = mb[i - s], vi = vb[i - s];
        dir[i] = mi / bc1 / (Math.sqrt(vi) / sbc2 + eps);
        m.codes[i] = nearest8(signedTh, mi * minv);
        v.codes[i] = nearest8(unsignedTh, vi * vinv);
      }
    }
  },
  bf16Gemm: false,
  gemmBf16(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
    checkGemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc);
    // op(A) rounded to bf16 once: [M, K] row-major; op(B) likewise as [N, K] (a dot product per C element).
    const ar = new Float32Array(m * k), br = new Float32Array(n * k);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) ar[i * k + p] = bf16Normal(tA ? a[p * lda + i] : a[i * lda + p]);
    }
    for (let j = 0; j < n; j++) {
      for (let p = 0; p < k; p++) br[j * k + p] = bf16Normal(tB ? b[j * ldb + p] : b[p * ldb + j]);
    }
    const fr = Math.fround, kk = alpha === 0 ? 0 : k; // BLAS: alpha = 0 reads neither A nor B
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        // bf16 x bf16 products are exact in float32; the sum is rounded to float32 at each step.
        for (let p = 0; p < kk; p++) {
          acc = fr(acc + ar[i * k + p] * br[j * k + p]);
          if (Math.abs(acc) < MIN_NORMAL) acc = 0;
        }
        const o = i * ldc + j;
        c[o] = beta === 0 ? fr(alpha * acc) : fr(fr(alpha * acc) + fr(beta * c[o]));
      }
    }
  },
};

function defaultPath(): string {
  return new URL("../../.tools/native/libnbtune_kernels.so", import.meta.url).pathname;
}

function open(path: string): NativeKernels | string {
  // OpenMP workers that spin after a kernel steal the cores OpenBLAS's own threads need next
  // (and the other way round): make them sleep instead, unless the user chose otherwise.
  try {
    if (envGet("OMP_WAIT_POLICY") === undefined) Deno.env.set("OMP_WAIT_POLICY", "PASSIVE");
  } catch {
    // No env permission: keep libgomp's default.
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (e) {
    return `cannot load ${path} (${(e as Error).message.split("\n")[0]})`;
  }
  const v = lib.symbols.nb_version();
  if (v !== ABI_VERSION) {
    lib.close();
    return `${path} is version ${v}, expected ${ABI_VERSION}: rebuild it with scripts/setup.sh`;
  }
  const s = lib.symbols;
  const bf16 = s.nb_bf16_supported() === 1;
  return {
    kind: "native",
    source: `${path} (${s.nb_max_threads()} threads${bf16 ? ", avx512_bf16" : ""})`,
    bf16Gemm: bf16,
    gemmBf16(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      if (!bf16) return typescriptKernels.gemmBf16(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      checkGemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc);
      const rc = s.nb_gemm_bf16(
        tA ? 1 : 0,
        tB ? 1 : 0,
        BigInt(m),
        BigInt(n),
        BigInt(k),
        alpha,
        a as Float32Array<ArrayBuffer>,
        BigInt(lda),
        b as Float32Array<ArrayBuffer>,
        BigInt(ldb),
        beta,
        c as Float32Array<ArrayBuffer>,
        BigInt(ldc),
        m * n * k < GEMM_PARALLEL_MIN_MACS ? 1 : threads,
      );
      if (rc !== 0) {
        throw new Error(
          rc === -2
            ? `gemmBf16(): out of memory for the packing buffers of a ${m}x${n}x${k} product`
            : `gemmBf16(): native kernel failed with code ${rc}`,
        );
      }
    },
    quantize8(x, th, codes, absmax, bs, row) {
      check8("quantize8", x.length, bs, row, [["codes", codes.length], ["absmax", absmax.length]]);
      if (th.length !== 255) throw new RangeError(`quantize8(): th has ${th.length} midpoints, expected 255`);
      s.nb_quant8(
        x as Float32Array<ArrayBuffer>,
        th as Float32Array<ArrayBuffer>,
        codes as Uint8Array<ArrayBuffer>,
        absmax as Float32Array<ArrayBuffer>,
        BigInt(x.length),
        BigInt(bs),
        BigInt(row ?? 0),
        threadsFor(x.length, s.nb_max_threads()),
      );
    },
    dequantize8(codes, absmax, code, out, bs, row) {
      check8("dequantize8", out.length, bs, row, [["codes", codes.length], ["absmax", absmax.length]]);
      if (code.length !== 256) {
        throw new RangeError(`dequantize8(): code has ${code.length} entries, expected 256`);
      }
      s.nb_dequant8(
        codes as Uint8Array<ArrayBuffer>,
        absmax as Float32Array<ArrayBuffer>,
        code as Float32Array<ArrayBuffer>,
        out as Float32Array<ArrayBuffer>,
        BigInt(out.length),
        BigInt(bs),
        BigInt(row ?? 0),
        threadsFor(out.length, s.nb_max_threads()),
      );
    },
    adam8bit(g, m, v, maps, dir, h) {
      const n = g.length, bs = h.blocksize, row = h.rowLength;
      check8("adam8bit", n, bs, row, [
        ["dir", dir.length],
        ["m.codes", m.codes.length],
        ["v.codes", v.codes.length],
        ["m.absmax", m.absmax.length],
        ["v.absmax", v.absmax.length],
      ]);
      for (
        const [name, a, len] of [
          ["signed", maps.signed, 256],
          ["unsigned", maps.unsigned, 256],
          ["signedTh", maps.signedTh, 255],
          ["unsignedTh", maps.unsignedTh, 255],
        ] as const
      ) {
        if (a.length !== len) {
          throw new RangeError(`adam8bit(): maps.${name} has ${a.length} entries, expected ${len}`);
        }
      }
      s.nb_adam8bit(
        g as Float32Array<ArrayBuffer>,
        m.codes as Uint8Array<ArrayBuffer>,
        m.absmax as Float32Array<ArrayBuffer>,
        v.codes as Uint8Array<ArrayBuffer>,
        v.absmax as Float32Array<ArrayBuffer>,
        maps.signed as Float32Array<ArrayBuffer>,
        maps.unsigned as Float32Array<ArrayBuffer>,
        maps.signedTh as Float32Array<ArrayBuffer>,
        maps.unsignedTh as Float32Array<ArrayBuffer>,
        dir as Float32Array<ArrayBuffer>,
        BigInt(n),
        BigInt(bs),
        BigInt(row ?? 0),
        h.beta1,
        h.beta2,
        h.bc1,
        h.sbc2,
        h.eps,
        threadsFor(n, s.nb_max_threads()),
      );
    },
    dequant4bit(packed, absmax, qmap, out, blocksize) {
      s.nb_dequant4bit(
        packed as Uint8Array<ArrayBuffer>,
        absmax as Float32Array<ArrayBuffer>,
        qmap as Float32Array<ArrayBuffer>,
        out as Float32Array<ArrayBuffer>,
        BigInt(out.length),
        Math.log2(blocksize),
        threadsFor(out.length, s.nb_max_threads()),
      );
    },
    crossEntropy(z, y, w, vocab, g, rowLoss, grad) {
      s.nb_cross_entropy(
        z as Float32Array<ArrayBuffer>,
        y as Int32Array<ArrayBuffer>,
        w as Float32Array<ArrayBuffer>,
        BigInt(y.length),
        BigInt(vocab),
        g,
        rowLoss as Float32Array<ArrayBuffer>,
        grad as Float32Array<ArrayBuffer> | null,
        threadsFor(z.length, s.nb_max_threads()),
      );
    },
  };
}

let cached: NativeKernels | undefined;

/**
 * The kernels: the native library when it loads, else the TypeScript fallback (with a one-time
 * console notice saying why and how to get the fast path).
 *
 * @example
 * ```ts
 * import { nativeKernels } from "./native.ts";
 * const k = nativeKernels();
 * const out = new Float32Array(4);
 * // codes 15, 0, 7, 8 of a 16-entry map [0, 1, ..., 15] scaled by 2
 * k.dequant4bit(new Uint8Array([0xf0, 0x78]), new Float32Array([2]), Float32Array.from({ length: 16 }, (_, i) => i), out, 32);
 * if (out.join() !== "30,0,14,16") throw new Error(`${k.kind}: ${out}`);
 * ```
 */
export function nativeKernels(): NativeKernels {
  if (cached) return cached;
  const mode = envGet("NBTUNE_NATIVE")?.toLowerCase();
  let why: string;
  if (mode === "off" || mode === "0" || mode === "false") {
    why = "NBTUNE_NATIVE=off";
  } else {
    const r = ffiGranted() ? open(envGet("NBTUNE_NATIVE_LIB") ?? defaultPath()) : "no --allow-ffi permission";
    if (typeof r !== "string") return cached = r;
    why = r;
    console.warn(
      `[nbtune] native kernels unavailable (${why}): NF4 dequantization, cross-entropy and 8-bit ` +
        "optimizer states run in TypeScript, slower. Run scripts/setup.sh (needs gcc) to build them.",
    );
  }
  return cached = { ...typescriptKernels, source: `TypeScript fallback (${why})` };
}

/**
 * Sets the native kernels' thread count (`0`: all cores, the default).
 *
 * @example
 * ```ts
 * import { setNativeThreads } from "./native.ts";
 * setNativeThreads(0);
 * ```
 */
export function setNativeThreads(n: number): void {
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(
      `setNativeThreads(): n must be a non-negative integer (0 = all cores), received ${n}`,
    );
  }
  threads = n;
}

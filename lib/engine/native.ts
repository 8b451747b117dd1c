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
} as const;

const ABI_VERSION = 2;

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
}

/** Threads the native kernels use (OpenMP's default: all cores). */
let threads = 0;

/** Below this many elements a kernel runs on the calling thread: waking workers costs more. */
const PARALLEL_MIN_ELEMENTS = 1 << 22;

function threadsFor(elements: number, max: number): number {
  return elements < PARALLEL_MIN_ELEMENTS ? 1 : threads || max;
}

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
  return {
    kind: "native",
    source: `${path} (${s.nb_max_threads()} threads)`,
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
      `[nbtune] native kernels unavailable (${why}): NF4 dequantization and cross-entropy run in ` +
        "TypeScript, slower. Run scripts/setup.sh (needs gcc) to build them.",
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

/**
 * Native BLAS (OpenBLAS, or Accelerate on macOS) loaded through Deno FFI.
 *
 * `cblas_sgemm` on the tfjs wasm heap is about 10x the wasm backend's own
 * matmul on these machines (RUNTIME.md §3). Loading never throws: when the
 * library, the `ffi` permission or the symbols are missing, {@linkcode loadBlas}
 * returns `null` and the engine falls back to plain wasm.
 *
 * Environment: `NBTUNE_BLAS=off` disables BLAS, `NBTUNE_BLAS_LIB=/path/lib.so`
 * tries that library first.
 * @module
 */
import { envGet, ffiGranted } from "./permissions.ts";
import { array, defineOptions, type FieldsOf, integer, string } from "../options/schema.ts";

/** CBLAS constants (cblas.h). */
export const CBLAS_ROW_MAJOR = 101;
/** `CblasNoTrans`. */
export const CBLAS_NO_TRANS = 111;
/** `CblasTrans`. */
export const CBLAS_TRANS = 112;

/**
 * A row-major GEMM with cblas semantics, `C = alpha·op(A)·op(B) + beta·C` (`op(A)`: `[M, K]`, `op(B)`:
 * `[K, N]`, `C`: `[M, N]`, leading dimensions `lda`, `ldb`, `ldc`): OpenBLAS's sgemm and our bf16 GEMM.
 */
export type Gemm = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
) => void;

/** A loaded BLAS library. */
export interface Blas {
  /** Path the library was loaded from. */
  path: string;
  /**
   * `cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)`
   * on Float32Array views (which may be views of a wasm heap: zero copy).
   */
  sgemm: Gemm;
  /** Sets the thread count (no-op when the library has no such call). */
  setThreads(n: number): void;
  /** Unloads the library. */
  close(): void;
}

/** Options for {@linkcode loadBlas}. */
export interface BlasOptions {
  /** Paths tried before the built-in list. @default {[]} */
  paths?: string[];
  /** Threads for OpenBLAS (`undefined` keeps the library default: all cores). @default {undefined} */
  threads?: number;
}

/** The schema of {@linkcode loadBlas}'s options. */
export const blasSchema = defineOptions(
  "loadBlas",
  {
    paths: array("Paths tried before the built-in list.", string("A library path.", { nonEmpty: true }), {
      default: [],
    }),
    threads: integer("Threads for OpenBLAS (default: the library default, all cores).", { min: 1 }),
  } satisfies FieldsOf<BlasOptions>,
);

/** Library paths tried in order after `NBTUNE_BLAS_LIB` and `options.paths`. */
export const BLAS_SEARCH_PATHS: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "libopenblas.so.0",
  "libopenblas.so",
  "/usr/lib/x86_64-linux-gnu/libcblas.so.3",
  "libcblas.so.3",
  "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
  "/usr/local/opt/openblas/lib/libopenblas.dylib",
  "/System/Library/Frameworks/Accelerate.framework/Accelerate",
];

const SGEMM = {
  parameters: [
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "f32",
    "buffer",
    "i32",
    "buffer",
    "i32",
    "f32",
    "buffer",
    "i32",
  ],
  result: "void",
} as const;

function tryOpen(path: string): Blas | null {
  let lib: Deno.DynamicLibrary<{ cblas_sgemm: typeof SGEMM }>;
  try {
    lib = Deno.dlopen(path, { cblas_sgemm: SGEMM });
  } catch {
    return null;
  }
  let setThreads: (n: number) => void = () => {};
  try {
    const t = Deno.dlopen(path, { openblas_set_num_threads: { parameters: ["i32"], result: "void" } });
    setThreads = (n) => t.symbols.openblas_set_num_threads(n);
  } catch {
    // Accelerate / reference CBLAS: no thread control.
  }
  const s = lib.symbols;
  return {
    path,
    sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      s.cblas_sgemm(
        CBLAS_ROW_MAJOR,
        transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
        transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
        m,
        n,
        k,
        alpha,
        a as Float32Array<ArrayBuffer>,
        lda,
        b as Float32Array<ArrayBuffer>,
        ldb,
        beta,
        c as Float32Array<ArrayBuffer>,
        ldc,
      );
    },
    setThreads,
    close() {
      lib.close();
    },
  };
}

let cached: Blas | null | undefined;

/**
 * Loads a BLAS library once per process (later calls return the same handle).
 * Returns `null`, never throws, when BLAS is disabled (`NBTUNE_BLAS=off`), the
 * `ffi` permission is not granted, or no library is found.
 *
 * @example
 * ```ts
 * import { loadBlas } from "./blas.ts";
 * const blas = loadBlas();
 * if (blas) {
 *   // [[1,2],[3,4]] @ [[5,6],[7,8]]
 *   const c = new Float32Array(4);
 *   blas.sgemm(false, false, 2, 2, 2, 1, new Float32Array([1, 2, 3, 4]), 2, new Float32Array([5, 6, 7, 8]), 2, 0, c, 2);
 *   if (c.join() !== "19,22,43,50") throw new Error(`wrong sgemm: ${c}`);
 * }
 * ```
 */
export function loadBlas(options: BlasOptions = {}): Blas | null {
  blasSchema.parse(options);
  if (cached === undefined) {
    cached = null;
    const mode = envGet("NBTUNE_BLAS")?.toLowerCase();
    if (mode !== "off" && mode !== "0" && mode !== "false" && ffiGranted()) {
      const override = envGet("NBTUNE_BLAS_LIB");
      const paths = [...(override ? [override] : []), ...(options.paths ?? []), ...BLAS_SEARCH_PATHS];
      for (const p of paths) {
        cached = tryOpen(p);
        if (cached) break;
      }
    }
  }
  if (cached && options.threads !== undefined) {
    cached.setThreads(options.threads);
  }
  return cached;
}

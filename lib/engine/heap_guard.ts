/**
 * Guard against silent corruption when the tfjs wasm heap is full.
 *
 * tfjs-backend-wasm 4.22 allocates every tensor with `wasm._malloc(bytes)` (in
 * `BackendWasm.move()`, called by `write()` and `makeOutput()`) and never checks
 * the result: when the heap (wasm32, at most ~4 GiB, ~3.9 GiB usable) is full,
 * malloc returns 0 and the new tensor silently overlaps older ones (RUNTIME.md §5), and a
 * request of 4 GiB or more wraps around to a small block.
 * {@linkcode installHeapGuard} wraps `_malloc` so that this throws
 * {@linkcode HeapOutOfMemoryError} instead, and makes the backend's kernel timer (used by
 * `tf.profile`) let that error through instead of turning it into a TypeError.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { type WasmBackend, wasmBackendOrUndefined } from "./_wasm_backend.ts";

/** Largest wasm heap Emscripten will grow to (`getHeapMax()` in the tfjs wasm glue). */
export const MAX_WASM_HEAP_BYTES = 4294901760;

const MiB = 1024 * 1024;
const mib = (n: number) => `${(n / MiB).toFixed(0)} MiB`;

/** Thrown when a wasm tensor allocation fails because the heap is full (or the request can never fit). */
export class HeapOutOfMemoryError extends RangeError {
  /** Bytes the failed allocation asked for. */
  readonly requestedBytes: number;
  /** Heap size when it failed. */
  readonly heapBytes: number;
  /** Bytes held by live tensors when it failed. */
  readonly tensorBytes: number;
  /** At most this many bytes could still be allocated: the heap's cap minus live tensor bytes. */
  readonly availableBytes: number;

  /** Builds the message from the numbers. */
  constructor(requestedBytes: number, heapBytes: number, tensorBytes: number) {
    const available = Math.max(0, MAX_WASM_HEAP_BYTES - tensorBytes);
    const never = requestedBytes >= MAX_WASM_HEAP_BYTES;
    super(
      `The wasm heap is full: allocating ${mib(requestedBytes)} (${requestedBytes} bytes) failed` +
        (never
          ? ` because no single tensor can exceed the wasm heap's ${mib(MAX_WASM_HEAP_BYTES)} cap`
          : ` with the heap at ${mib(heapBytes)} of its ~3.9 GiB cap (${mib(MAX_WASM_HEAP_BYTES)} max), ${
            mib(tensorBytes)
          } held by live tensors, at most ${mib(available)} (${available} bytes) available`) +
        `. Use a smaller micro-batch (batchSize) or sequence length (tokenize.maxLength), a 4-bit base ` +
        `model, or gradient checkpointing (gradientCheckpointing: true), and dispose tensors you no longer need.`,
    );
    this.name = "HeapOutOfMemoryError";
    this.requestedBytes = requestedBytes;
    this.heapBytes = heapBytes;
    this.tensorBytes = tensorBytes;
    this.availableBytes = available;
  }
}

/** Heap numbers for the wasm backend (zeros where it has not started). */
export interface HeapStats {
  /** Current wasm heap size (it never shrinks). */
  heapBytes: number;
  /** The heap's ceiling. */
  maxHeapBytes: number;
  /** Bytes held by live tfjs tensors (`tf.memory().numBytes`, all backends). */
  tensorBytes: number;
}

/**
 * Current heap size, its cap and the bytes held by live tensors.
 *
 * @example
 * ```ts
 * import { heapStats } from "./heap_guard.ts";
 * const s = heapStats();
 * if (s.maxHeapBytes < 4e9 || s.heapBytes < 0) throw new Error("bad stats");
 * ```
 */
export function heapStats(): HeapStats {
  const be = wasmBackendOrUndefined();
  return {
    heapBytes: be ? be.wasm.HEAPU8.buffer.byteLength : 0,
    maxHeapBytes: MAX_WASM_HEAP_BYTES,
    tensorBytes: liveTensorBytes(),
  };
}

/** `tf.memory().numBytes`, or 0 when no tfjs backend is registered yet. */
function liveTensorBytes(): number {
  try {
    return tf.memory().numBytes;
  } catch {
    return 0;
  }
}

const GUARDED = Symbol.for("nbtune.heapGuard");

interface TapeEngine {
  gradients: (...args: unknown[]) => unknown;
  state: { gradientDepth: number; activeTape: { saved?: tf.Tensor[] }[] | null };
  [GUARDED]?: boolean;
}

/**
 * Makes `engine.gradients()` free the tensors its tape saved for backward when the forward or
 * backward throws (a full heap, a bad shape): tfjs 4.22 frees them only on success, so every
 * failed step leaked one copy of its saved activations.
 */
function freeTapeOnError(): void {
  const engine = tf.engine() as unknown as TapeEngine;
  if (engine[GUARDED]) return;
  const original = engine.gradients.bind(engine);
  engine.gradients = (...args: unknown[]) => {
    try {
      return original(...args);
    } catch (e) {
      const tape = engine.state.activeTape;
      if (engine.state.gradientDepth === 0 && tape) {
        for (const node of tape) for (const t of node.saved ?? []) t.dispose();
        engine.state.activeTape = null;
      }
      throw e;
    }
  };
  engine[GUARDED] = true;
}

/**
 * Wraps the wasm backend's `_malloc` so a failed allocation throws
 * {@linkcode HeapOutOfMemoryError} (idempotent). Pass the backend, or omit it to
 * use the initialised wasm backend; returns false when there is none.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
 * import { installHeapGuard } from "./heap_guard.ts";
 * await tf.setBackend("wasm");
 * if (!installHeapGuard()) throw new Error("expected the guard to install");
 * ```
 */
export function installHeapGuard(backend?: unknown): boolean {
  const be = (backend as WasmBackend | undefined) ?? wasmBackendOrUndefined();
  if (!be?.wasm) return false;
  const mod = be.wasm as WasmBackend["wasm"] & { [GUARDED]?: boolean };
  if (mod[GUARDED]) return true;
  // Emscripten binds `_malloc` lazily: the first call replaces Module._malloc with the raw
  // export, which would drop our wrapper. One throwaway call makes the binding final.
  mod._free(mod._malloc(8));
  const raw = mod._malloc.bind(mod);
  mod._malloc = (bytes: number) => {
    // wasm32 malloc takes a 32-bit size: 4 GiB and more would wrap around to a small block
    // that the caller then overruns ("offset is out of bounds" or silent corruption).
    if (bytes >= MAX_WASM_HEAP_BYTES || !(bytes >= 0)) {
      throw new HeapOutOfMemoryError(bytes, mod.HEAPU8.buffer.byteLength, liveTensorBytes());
    }
    const p = raw(bytes);
    // Near the 4 GiB top, the allocator's 32-bit break arithmetic can wrap and hand out a block
    // that ends past the heap (then "Invalid typed array length" / "offset is out of bounds").
    if ((p === 0 && bytes > 0) || (p >>> 0) + bytes > mod.HEAPU8.buffer.byteLength) {
      throw new HeapOutOfMemoryError(bytes, mod.HEAPU8.buffer.byteLength, liveTensorBytes());
    }
    return p;
  };
  // tf.profile (the trainer's measureMemory) times kernels with the backend's async `time(f)`: an
  // error thrown by a kernel (this guard's included) became a rejected promise nobody awaits, and
  // tfjs then failed on the missing outputs with "Cannot read properties of undefined". Timing
  // synchronously lets the kernel's own error propagate.
  (be as unknown as { time(f: () => void): Promise<{ kernelMs: number }> }).time = (f) => {
    const start = performance.now();
    f();
    return Promise.resolve({ kernelMs: performance.now() - start });
  };
  freeTapeOnError();
  mod[GUARDED] = true;
  return true;
}

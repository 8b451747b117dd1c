/**
 * Where a training step's time goes: every registered kernel of the active
 * backend is wrapped with a timer while a profile runs, and code regions
 * (phases such as "forward" or "optimizer", and spans such as NF4
 * dequantization) report their own wall time. Everything here is a no-op
 * (one branch) when no profile is running.
 *
 * wasm kernels run synchronously, so a kernel's wall time is its compute time.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** Time and calls of one kernel (or span) inside one phase. */
export interface KernelTime {
  /** Kernel name (`Softmax`, …; matmuls with a size bucket, `BatchMatMul [10-100 MFLOP]`) or span label. */
  name: string;
  /** Phase active when it ran (`""` outside any phase). */
  phase: string;
  ms: number;
  calls: number;
}

/** What {@linkcode KernelProfile.stop} returns. */
export interface KernelProfileResult {
  /** Wall time between start and stop. */
  wallMs: number;
  /** Per kernel and phase. */
  kernels: KernelTime[];
  /** Spans reported with {@linkcode recordSpan} (nested kernels are also counted in `kernels`). */
  spans: KernelTime[];
  /** Wall time of each phase (nested phases count in both). */
  phases: Record<string, number>;
}

/** A running profile. */
export interface KernelProfile {
  /** Restores the kernels and returns the times. */
  stop(): KernelProfileResult;
}

interface Active {
  kernels: Map<string, KernelTime>;
  spans: Map<string, KernelTime>;
  phases: Record<string, number>;
  phase: string;
  t0: number;
  replaced: tf.KernelConfig[];
}

let active: Active | undefined;

const MATMULS = new Set(["BatchMatMul", "_FusedMatMul"]);

/** `BatchMatMul [10-100 MFLOP]`: matmuls are bucketed by size, since small ones run far below the ceiling. */
function matmulLabel(name: string, args: Parameters<tf.KernelFunc>[0]): string {
  const { a, b } = args.inputs as { a?: tf.TensorInfo; b?: tf.TensorInfo };
  if (!a || !b) return name;
  const tA = Boolean(args.attrs?.transposeA), tB = Boolean(args.attrs?.transposeB);
  const ra = a.shape.length, rb = b.shape.length;
  const m = a.shape[tA ? ra - 1 : ra - 2],
    k = a.shape[tA ? ra - 2 : ra - 1],
    n = b.shape[tB ? rb - 2 : rb - 1];
  const batch = Math.max(
    a.shape.slice(0, -2).reduce((x, y) => x * y, 1),
    b.shape.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  const mflop = (2 * batch * m * n * k) / 1e6;
  const bucket = mflop < 10 ? "< 10" : mflop < 100 ? "10-100" : mflop < 1000 ? "100-1000" : ">= 1000";
  return `${name} [${bucket} MFLOP]`;
}

function bump(map: Map<string, KernelTime>, name: string, phase: string, ms: number) {
  const key = `${phase}\u0000${name}`;
  const e = map.get(key);
  if (e) {
    e.ms += ms;
    e.calls++;
  } else map.set(key, { name, phase, ms, calls: 1 });
}

/**
 * Starts timing every kernel of the active backend (one profile at a time).
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
 * import { startKernelProfile, withPhase } from "./kernel_timer.ts";
 * await tf.setBackend("cpu");
 * const p = startKernelProfile();
 * withPhase("forward", () => tf.tidy(() => tf.matMul(tf.ones([4, 4]), tf.ones([4, 4])).dataSync()));
 * const r = p.stop();
 * if (!r.kernels.some((k) => k.name === "BatchMatMul [< 10 MFLOP]" && k.phase === "forward")) throw new Error();
 * ```
 */
export function startKernelProfile(): KernelProfile {
  if (active) throw new Error("startKernelProfile(): a profile is already running; stop() it first");
  const backend = tf.getBackend();
  const a: Active = {
    kernels: new Map(),
    spans: new Map(),
    phases: {},
    phase: "",
    t0: performance.now(),
    replaced: [],
  };
  for (const k of tf.getKernelsForBackend(backend)) {
    const inner = k.kernelFunc;
    const name = k.kernelName;
    const wrapped: tf.KernelConfig = {
      ...k,
      kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
        const t = performance.now();
        try {
          return inner(args);
        } finally {
          bump(a.kernels, MATMULS.has(name) ? matmulLabel(name, args) : name, a.phase, performance.now() - t);
        }
      }) as tf.KernelFunc,
    };
    tf.unregisterKernel(name, backend);
    tf.registerKernel(wrapped);
    a.replaced.push(k);
  }
  active = a;
  return {
    stop() {
      if (active !== a) throw new Error("KernelProfile.stop(): this profile is not running");
      for (const k of a.replaced) {
        tf.unregisterKernel(k.kernelName, k.backendName);
        tf.registerKernel(k);
      }
      active = undefined;
      return {
        wallMs: performance.now() - a.t0,
        kernels: [...a.kernels.values()],
        spans: [...a.spans.values()],
        phases: a.phases,
      };
    },
  };
}

/** True while a kernel profile runs (callers skip optional bookkeeping otherwise). */
export function profiling(): boolean {
  return active !== undefined;
}

/**
 * Runs `fn` as phase `name` of the running profile (just runs it when none runs).
 *
 * @example
 * ```ts
 * import { withPhase } from "./kernel_timer.ts";
 * if (withPhase("optimizer", () => 42) !== 42) throw new Error();
 * ```
 */
export function withPhase<T>(name: string, fn: () => T): T {
  const a = active;
  if (!a) return fn();
  const prev = a.phase, t = performance.now();
  a.phase = name;
  try {
    return fn();
  } finally {
    a.phase = prev;
    a.phases[name] = (a.phases[name] ?? 0) + performance.now() - t;
  }
}

/**
 * Runs `fn` and, while a profile runs, records its wall time as span `label`.
 *
 * @example
 * ```ts
 * import { timedSpan } from "./kernel_timer.ts";
 * const w = timedSpan("dequantize", () => new Float32Array(4));
 * if (w.length !== 4) throw new Error();
 * ```
 */
export function timedSpan<T>(label: string, fn: () => T): T {
  const a = active;
  if (!a) return fn();
  const t = performance.now();
  try {
    return fn();
  } finally {
    bump(a.spans, label, a.phase, performance.now() - t);
  }
}

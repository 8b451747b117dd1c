/**
 * Backend set-up: picks and starts the tfjs backend, and on wasm installs the
 * engine's pieces (BLAS matmuls, missing kernels, heap guard).
 *
 * - `"auto"` (default): webgpu when the adapter is a real GPU, else wasm (with
 *   OpenBLAS when it loads; without it the engine runs in a slow mode and says so
 *   in `reason`), else cpu.
 * - `"wasm"`, `"cpu"`: as named. `"webgpu"`: the webgpu backend is imported only
 *   when asked. `"tensorflow"`: `npm:@tensorflow/tfjs-node-gpu`, then
 *   `npm:@tensorflow/tfjs-node` (native TensorFlow; not installable everywhere).
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import "npm:@tensorflow/tfjs-backend-cpu@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { loadBlas } from "./blas.ts";
import { ensureGradients } from "./gradients.ts";
import { installHeapGuard } from "./heap_guard.ts";
import { registerMatmulKernels } from "./matmul_kernels.ts";
import { registerMissingKernels } from "./missing_kernels.ts";
import { installWebgpuKernelFixes } from "./webgpu_kernels.ts";
import {
  type AdapterDescription,
  describeAdapter,
  formatAdapter,
  installBufferLimitGuard,
  mayHaveHardwareGpu,
} from "./webgpu_info.ts";
import { boolean, defineOptions, type FieldsOf, integer, oneOf } from "../options/schema.ts";

/** Backends the toolkit knows how to start. */
export type BackendName = "auto" | "wasm" | "cpu" | "webgpu" | "tensorflow";

/** What `initEngine()` chose and why. */
export interface EngineInfo {
  /** The tfjs backend now active. */
  backend: string;
  /** True when OpenBLAS (FFI) runs the matmuls. */
  blas: boolean;
  /** One line explaining the choice (printed by the demo). */
  reason: string;
  /** On webgpu: the adapter (name, hardware or software, buffer limits). */
  adapter?: AdapterDescription;
}

/** Options for {@linkcode initEngine}. */
export interface EngineOptions {
  /** Which backend to use. @default {"auto"} */
  backend?: BackendName;
  /** Print the one-line notice about the chosen backend. @default {false} */
  verbose?: boolean;
  /** OpenBLAS threads (`undefined`: the library default, all cores). @default {undefined} */
  blasThreads?: number;
}

const BACKENDS: readonly BackendName[] = ["auto", "wasm", "cpu", "webgpu", "tensorflow"];
/** The schema of {@linkcode initEngine}'s options. */
export const engineSchema = defineOptions(
  "initEngine",
  {
    backend: oneOf("Which backend to use.", BACKENDS, { default: "auto" }),
    verbose: boolean("Print the one-line notice about the chosen backend.", { default: false }),
    blasThreads: integer("OpenBLAS threads (default: the library default, all cores).", { min: 1 }),
  } satisfies FieldsOf<EngineOptions>,
);

let current: EngineInfo | undefined;
let requested: BackendName | undefined;

/**
 * The engine's current info, or undefined before {@linkcode initEngine}.
 *
 * @example
 * ```ts
 * import { engineInfo, initEngine } from "./backend.ts";
 * await initEngine({ backend: "cpu" });
 * if (engineInfo()?.backend !== "cpu") throw new Error("expected cpu");
 * ```
 */
export function engineInfo(): EngineInfo | undefined {
  return current;
}

/**
 * Starts the default engine (`initEngine()`, "auto") unless one is already running:
 * every async public entry point that needs tensors calls this first, so users
 * need `initEngine()` only to choose a backend.
 *
 * @example
 * ```ts
 * import { ensureEngine } from "./backend.ts";
 * const info = await ensureEngine();
 * if (!info.backend) throw new Error("no backend");
 * ```
 */
export async function ensureEngine(): Promise<EngineInfo> {
  if (current && tf.getBackend() === current.backend) return current;
  return await initEngine();
}

/**
 * For synchronous entry points that may create the first tensors (they cannot
 * await the wasm start-up): throws a clear error when no engine runs yet.
 */
export function requireEngine(what: string): void {
  if (current) return;
  // A backend the user started with tfjs directly (tf.setBackend) counts too.
  const engine = tf.engine() as unknown as { backendInstance?: unknown };
  if (engine.backendInstance) return;
  throw new Error(
    `${what} needs a running engine and, being synchronous, cannot start one itself: run ` +
      "`await initEngine()` once first (loadModel(), train() and the other async entry points start it " +
      "by themselves).",
  );
}

/**
 * Throws a clear error when the active backend cannot read tensors synchronously
 * (tfjs-webgpu under Deno), naming the operation and what to do instead.
 */
export function requireSyncReads(what: string): void {
  if (tf.getBackend() === "webgpu") {
    throw new Error(
      `${what} reads tensor values synchronously, which the webgpu backend cannot do under Deno; ` +
        `use its async form on webgpu (train(), evaluateLossAsync() and generateAsync() read with ` +
        `\`await tensor.data()\`), or call initEngine({ backend: "wasm" }) for it.`,
    );
  }
}

async function activate(name: string): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`Backend "${name}" could not be started`);
  await tf.ready();
}

async function startWasm(options: EngineOptions): Promise<EngineInfo> {
  await activate("wasm");
  registerMissingKernels();
  installHeapGuard();
  const blas = loadBlas(options.blasThreads === undefined ? {} : { threads: options.blasThreads });
  registerMatmulKernels({ blas });
  return blas
    ? { backend: "wasm", blas: true, reason: `wasm backend with OpenBLAS matmuls (${blas.path})` }
    : {
      backend: "wasm",
      blas: false,
      reason: "wasm backend WITHOUT BLAS: slow mode (matmuls ~10x slower); install libopenblas0-pthread " +
        "(Debian/Ubuntu) or set NBTUNE_BLAS_LIB=/path/to/libopenblas, and allow FFI (--allow-ffi)",
    };
}

async function startWebgpu(): Promise<EngineInfo> {
  const adapter = await describeAdapter();
  if (!adapter) {
    throw new Error(
      'Backend "webgpu": Deno reports no WebGPU adapter (no GPU driver; on Linux install a Vulkan driver, e.g. ' +
        'mesa-vulkan-drivers for the software one); use backend "wasm".',
    );
  }
  await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
  await activate("webgpu");
  installWebgpuKernelFixes();
  installBufferLimitGuard();
  return {
    backend: "webgpu",
    blas: false,
    adapter,
    reason: `webgpu backend on ${formatAdapter(adapter)}: train() (mode "full"; AdamW, Lion, 8-bit AdamW), ` +
      "evaluateLossAsync() and generateAsync() read with await",
  };
}

async function startTensorflow(): Promise<EngineInfo> {
  // Bare, non-literal specifiers: only packages the project has added (import map or
  // node_modules) are tried, so asking for this backend never downloads anything.
  for (const pkg of ["tfjs-node-gpu", "tfjs-node"]) {
    try {
      await import(["@tensorflow", pkg].join("/"));
    } catch {
      continue;
    }
    await activate("tensorflow");
    return { backend: "tensorflow", blas: false, reason: `native TensorFlow backend (@tensorflow/${pkg})` };
  }
  throw new Error(
    `Backend "tensorflow" needs the native TensorFlow bindings, which are not installed: run ` +
      `\`deno add npm:@tensorflow/tfjs-node@4.22.0\` (or npm:@tensorflow/tfjs-node-gpu with CUDA) and allow its ` +
      `install scripts, or use backend "wasm".`,
  );
}

/**
 * Starts tfjs on the requested backend. A second call asking for the same
 * backend (or "auto" once started) returns the cached info; asking for another
 * backend switches to it.
 *
 * @example
 * ```ts
 * import { initEngine } from "./backend.ts";
 * const info = await initEngine({ backend: "cpu" });
 * if (info.backend !== "cpu") throw new Error("expected cpu");
 * ```
 */
export async function initEngine(options: EngineOptions = {}): Promise<EngineInfo> {
  const want = engineSchema.parse(options).backend;
  if (current && (want === "auto" || want === requested || want === current.backend)) {
    if (tf.getBackend() === current.backend) return current;
  }
  let info: EngineInfo;
  switch (want) {
    case "auto": {
      // WebGPU when Deno reports a hardware adapter (never a software one such as lavapipe); no probe
      // on a Linux machine without GPU device nodes.
      const adapter = mayHaveHardwareGpu() ? await describeAdapter() : undefined;
      if (adapter?.hardware) {
        const gpu = await startWebgpu().catch((e) => {
          console.warn(`[engine] auto: WebGPU on ${adapter.name} failed to start (${(e as Error).message})`);
          return undefined;
        });
        if (gpu) {
          console.log(`[engine] auto: WebGPU on ${formatAdapter(adapter)}`);
          info = gpu;
          break;
        }
      }
      info = await startWasm(options)
        .catch(async (e) => {
          await activate("cpu");
          return {
            backend: "cpu",
            blas: false,
            reason: `cpu backend (wasm failed: ${(e as Error).message})`,
          };
        });
      break;
    }
    case "wasm":
      info = await startWasm(options);
      break;
    case "cpu":
      await activate("cpu");
      info = { backend: "cpu", blas: false, reason: "cpu backend (plain JavaScript, slowest)" };
      break;
    case "webgpu":
      info = await startWebgpu();
      break;
    case "tensorflow":
      info = await startTensorflow();
      break;
  }
  if (!(await ensureGradients())) {
    info.reason += "; op gradients not registered (add @tensorflow/tfjs to the import map)";
  }
  current = info;
  requested = want;
  if (options.verbose) console.log(`[engine] ${info.reason}`);
  return info;
}

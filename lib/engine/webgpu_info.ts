/**
 * The WebGPU adapter: what Deno reports about it, whether it is real hardware, and a
 * guard that refuses tensors larger than the device's buffer limits with a clear message
 * (tfjs-webgpu would otherwise fail inside a shader or return wrong values).
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** What {@linkcode describeAdapter} reports (also `EngineInfo.adapter` on webgpu). */
export interface AdapterDescription {
  /** The adapter's description, e.g. "NVIDIA GeForce RTX 4090" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  vendor: string;
  architecture: string;
  /** False for software rasterizers (lavapipe/llvmpipe, SwiftShader) and fallback adapters. */
  hardware: boolean;
  /** The limits that bound one tensor's buffer, in bytes (and storage buffers per shader). */
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxStorageBuffersPerShaderStage: number;
  };
}

/**
 * True when an adapter description names a software implementation.
 *
 * @example
 * ```ts
 * import { isSoftwareAdapterName } from "./webgpu_info.ts";
 * if (!isSoftwareAdapterName("llvmpipe (LLVM 15.0.6, 256 bits)")) throw new Error("lavapipe is software");
 * if (isSoftwareAdapterName("NVIDIA H200")) throw new Error("a GPU is hardware");
 * ```
 */
export function isSoftwareAdapterName(name: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|software|microsoft basic render/i.test(name);
}

/**
 * Whether this machine can have a hardware GPU adapter at all. On Linux a GPU shows up as a render node
 * (`/dev/dri/renderD*`) or an NVIDIA device (`/dev/nvidia*`); without either, `"auto"` skips the WebGPU
 * probe, so CPU-only servers start faster and Mesa prints nothing (it warns on stderr when
 * `XDG_RUNTIME_DIR` is unset). Other systems are always probed.
 *
 * @example
 * ```ts
 * import { mayHaveHardwareGpu } from "./webgpu_info.ts";
 * if (typeof mayHaveHardwareGpu() !== "boolean") throw new Error("a boolean");
 * ```
 */
export function mayHaveHardwareGpu(): boolean {
  if (Deno.build.os !== "linux") return true;
  const any = (dir: string, prefix: string) => {
    try {
      for (const e of Deno.readDirSync(dir)) if (e.name.startsWith(prefix)) return true;
    } catch {
      // no such folder, or not readable: no device there
    }
    return false;
  };
  return any("/dev/dri", "renderD") || any("/dev", "nvidia");
}

/**
 * Describes the adapter Deno's `navigator.gpu` offers, or undefined when there is none
 * (no WebGPU in this runtime, or no usable driver).
 *
 * @example
 * ```ts
 * import { describeAdapter } from "./webgpu_info.ts";
 * const a = await describeAdapter(); // lavapipe in CI, undefined without a Vulkan driver
 * if (a && !(a.limits.maxStorageBufferBindingSize > 0)) throw new Error("limits are numbers");
 * ```
 */
export async function describeAdapter(): Promise<AdapterDescription | undefined> {
  try {
    const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
    const adapter = await gpu?.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return undefined;
    const info = (adapter.info ?? {}) as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const name = info.description || info.device || info.vendor || "unnamed adapter";
    const fallback = info.isFallbackAdapter ??
      (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
    const l = adapter.limits;
    return {
      name,
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      hardware: !fallback &&
        !isSoftwareAdapterName(`${name} ${info.device ?? ""} ${info.architecture ?? ""}`),
      limits: {
        maxBufferSize: l.maxBufferSize,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      },
    };
  } catch {
    return undefined;
  }
}

/** One line for logs: name, kind and the buffer limits in MiB. */
export function formatAdapter(a: AdapterDescription): string {
  const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
  return `${a.name} (${a.hardware ? "hardware" : "software"}; maxBufferSize ${
    mib(a.limits.maxBufferSize)
  }, maxStorageBufferBindingSize ${mib(a.limits.maxStorageBufferBindingSize)})`;
}

/**
 * Throws when a tensor of `shape` and `dtype` is larger than one buffer may be on this
 * adapter, naming the shape, the limit and what to do.
 *
 * @example
 * ```ts
 * import { checkBufferFits } from "./webgpu_info.ts";
 * const limits = { maxBufferSize: 1024, maxStorageBufferBindingSize: 512, maxStorageBuffersPerShaderStage: 8 };
 * checkBufferFits([8, 16], "float32", limits); // 512 bytes: fits
 * let msg = "";
 * try { checkBufferFits([8, 17], "float32", limits); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("[8,17]") || !msg.includes("maxStorageBufferBindingSize")) throw new Error(msg);
 * ```
 */
export function checkBufferFits(
  shape: readonly number[],
  dtype: string,
  limits: AdapterDescription["limits"],
): void {
  if (dtype === "string") return; // string tensors stay on the host
  const bytes = shape.reduce((a, b) => a * b, 1) * (dtype === "complex64" ? 8 : 4);
  const limit = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  if (bytes <= limit) return;
  const which = limits.maxStorageBufferBindingSize <= limits.maxBufferSize
    ? "maxStorageBufferBindingSize"
    : "maxBufferSize";
  throw new RangeError(
    `webgpu: a ${dtype} tensor of shape [${shape}] needs ${bytes} bytes, more than this adapter's ${which} ` +
      `(${limit} bytes); use a smaller batch or sequence length (a [batch, seq, vocab] logits tensor is the ` +
      `usual culprit), quantize the model, or use initEngine({ backend: "wasm" }).`,
  );
}

let guarded = false;

/**
 * Makes the active webgpu backend refuse, with {@linkcode checkBufferFits}'s message, every
 * tensor (uploaded or computed) larger than its device's limits. Installed once by
 * `initEngine({ backend: "webgpu" })`.
 */
export function installBufferLimitGuard(): void {
  if (guarded) return;
  const be = tf.backend() as unknown as {
    device: GPUDevice;
    write(values: unknown, shape: number[], dtype: string): unknown;
    makeTensorInfo(shape: number[], dtype: string, values?: unknown): unknown;
  };
  const l = be.device.limits;
  const limits = {
    maxBufferSize: l.maxBufferSize,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
  };
  const write = be.write.bind(be), make = be.makeTensorInfo.bind(be);
  be.write = (values, shape, dtype) => {
    checkBufferFits(shape, dtype, limits);
    return write(values, shape, dtype);
  };
  be.makeTensorInfo = (shape, dtype, values) => {
    checkBufferFits(shape, dtype, limits);
    return make(shape, dtype, values);
  };
  guarded = true;
}

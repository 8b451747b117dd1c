/**
 * Fixes for tfjs-webgpu kernels, installed by `initEngine({ backend: "webgpu" })`.
 *
 * tfjs-webgpu 4.22 binds every input of `AddN` and `Concat` as its own storage buffer, and
 * asks for the device's default limit of 8 storage buffers per shader stage: with 8 or more
 * inputs the shader is invalid and the result silently comes back as zeros (seen on Mesa's
 * lavapipe: `addN` of 8 scalars reads 0). The wrappers here split such calls into groups
 * that fit the limit (the output takes one binding) and combine the partial results.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

type KernelFunc = tf.KernelConfig["kernelFunc"];
interface Backend {
  device?: { limits: { maxStorageBuffersPerShaderStage: number } };
  disposeData(id: object): void;
}

let installed = false;

/** Largest number of inputs one AddN/Concat shader may bind on the active webgpu device. */
export function maxKernelInputs(): number {
  const be = tf.backend() as unknown as Backend;
  return Math.max(2, (be.device?.limits.maxStorageBuffersPerShaderStage ?? 8) - 1);
}

function wrap(name: string, split: (orig: KernelFunc) => KernelFunc): void {
  const cfg = tf.getKernel(name, "webgpu");
  if (!cfg) throw new Error(`webgpu_kernels: tfjs-webgpu has no ${name} kernel to wrap`);
  tf.unregisterKernel(name, "webgpu");
  tf.registerKernel({ ...cfg, kernelFunc: split(cfg.kernelFunc) });
}

/** Runs `orig` on groups of at most `n` inputs, then on the partial results, until one call is left. */
function grouped(orig: KernelFunc): KernelFunc {
  return (args) => {
    const n = maxKernelInputs();
    const be = args.backend as unknown as Backend;
    let inputs = args.inputs as unknown as tf.TensorInfo[];
    if (inputs.length <= n) return orig(args);
    const mine = new Set<tf.TensorInfo>(); // partial results made here, freed once consumed
    const call = (group: tf.TensorInfo[]) =>
      orig({ ...args, inputs: group as unknown as tf.NamedTensorInfoMap }) as tf.TensorInfo;
    while (inputs.length > n) {
      const next: tf.TensorInfo[] = [];
      for (let i = 0; i < inputs.length; i += n) {
        const group = inputs.slice(i, i + n);
        if (group.length === 1) next.push(group[0]);
        else {
          const r = call(group);
          mine.add(r);
          next.push(r);
        }
      }
      for (const t of inputs) {
        if (mine.has(t) && !next.includes(t)) {
          be.disposeData(t.dataId);
          mine.delete(t);
        }
      }
      inputs = next;
    }
    const out = call(inputs);
    for (const t of mine) be.disposeData(t.dataId);
    return out;
  };
}

/**
 * Installs the AddN/Concat wrappers on the webgpu backend (once; the webgpu backend
 * must be registered). Afterwards `tf.addN` and `tf.concat` of any number of tensors
 * give the same values as on wasm.
 *
 * @example
 * ```ts ignore
 * // needs a WebGPU adapter: tests/engine/webgpu_train_test.ts runs it on lavapipe
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "./backend.ts";
 * await initEngine({ backend: "webgpu" }); // installs the wrappers
 * const s = tf.addN(Array.from({ length: 20 }, () => tf.scalar(1)));
 * if ((await s.data())[0] !== 20) throw new Error("addN of 20 scalars");
 * ```
 */
export function installWebgpuKernelFixes(): void {
  if (installed) return;
  wrap("AddN", grouped);
  wrap("Concat", grouped);
  installed = true;
}

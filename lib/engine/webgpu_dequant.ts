/**
 * 4-bit (NF4/FP4) weights on the GPU: the packed codes and the per-block absmax are uploaded
 * once per weight, and each use dequantizes them with a WGSL kernel (a custom tfjs-webgpu
 * program) straight into the fp32 weight the matmul reads. A QLoRA model's GPU memory is then
 * its 4-bit size (codes + one fp32 absmax per block; double-quantized absmax is expanded on
 * upload) plus the one dequantized layer in use, instead of its fp32 size.
 *
 * `w[i] = quantMap[code_i] * absmax[i / G]` in f32, one rounding: bit-exact with the CPU
 * dequantizer (`dequantize4bit`), which tests/engine/webgpu_dequant_test.ts checks on lavapipe.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** What the kernel needs of a 4-bit state (a `Quant4bitState` has all of it). */
export interface Packed4bit {
  /** Packed codes `[ceil(N / 2)]`, high nibble first. */
  packed: Uint8Array;
  /** Per-block scales `[ceil(N / G)]` (already expanded when double-quantized). */
  absmax: Float32Array;
  /** The 16-entry code table. */
  quantMap: Float32Array;
  blocksize: number;
  /** Weight shape, e.g. `[O, I]`. */
  shape: number[];
  numel: number;
}

/** The device copies of one weight: codes as 32-bit words, absmax, code table. */
interface Uploaded {
  codes: tf.Tensor1D;
  absmax: tf.Tensor1D;
  qmap: tf.Tensor1D;
}

const uploads = new WeakMap<Packed4bit, Uploaded>();
let uploadedBytes = 0;

/** Bytes of 4-bit weights (codes, absmax, code tables) held on the GPU now. */
export function deviceQuantBytes(): number {
  return uploadedBytes;
}

// The tfjs-webgpu program: one invocation per output element, flat dispatch.
class Dequant4bitProgram {
  variableNames = ["codes", "absmax", "qmap"];
  outputShape: number[];
  shaderKey = "nbtune_dequant4bit";
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  uniforms = "blocksize : i32,";
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;

  constructor(shape: number[]) {
    this.outputShape = shape;
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    const n = shape.reduce((a, b) => a * b, 1);
    const groups = Math.ceil(n / this.workgroupSize[0]);
    // Large weights spread the workgroups over y (at most 65535 per dimension).
    const x = Math.min(groups, 65535);
    this.dispatch = [x, Math.ceil(groups / x), 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let byteIndex = index / 2;
          let word = u32(codes[byteIndex / 4]);
          let byte = (word >> (u32(byteIndex % 4) * 8u)) & 255u;
          var code = byte & 15u;
          if (index % 2 == 0) {
            code = byte >> 4u;
          }
          setOutputAtIndex(index, qmap[i32(code)] * absmax[index / uniforms.blocksize]);
        }
      }
    `;
  }
}

function upload(state: Packed4bit): Uploaded {
  let u = uploads.get(state);
  if (u) return u;
  const words = new Int32Array(Math.ceil(state.packed.length / 4));
  new Uint8Array(words.buffer).set(state.packed); // little-endian: byte j is bits 8·(j % 4) of word j / 4
  u = tf.tidy(() => ({
    codes: tf.keep(tf.tensor1d(words, "int32")),
    absmax: tf.keep(tf.tensor1d(state.absmax, "float32")),
    qmap: tf.keep(tf.tensor1d(state.quantMap, "float32")),
  }));
  uploads.set(state, u);
  uploadedBytes += words.byteLength + state.absmax.byteLength + state.quantMap.byteLength;
  return u;
}

/**
 * The dequantized weight of `state` as a new fp32 tensor of `state.shape`, computed on the GPU
 * from codes uploaded on first use. Needs the webgpu backend (see the module docs).
 *
 * @example
 * ```ts ignore
 * // needs a WebGPU adapter: tests/engine/webgpu_dequant_test.ts runs it on lavapipe
 * import { initEngine } from "./backend.ts";
 * import { dequantize4bit, quantize4bit } from "../quant/blockwise_4bit.ts";
 * import { dequantize4bitOnDevice } from "./webgpu_dequant.ts";
 * await initEngine({ backend: "webgpu" });
 * const q = quantize4bit(Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)), { shape: [4, 64] });
 * const w = await dequantize4bitOnDevice(q).data();
 * if (w.join() !== dequantize4bit(q).join()) throw new Error("not bit-exact");
 * ```
 */
export function dequantize4bitOnDevice(state: Packed4bit): tf.Tensor {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(
      `dequantize4bitOnDevice: the active backend is "${tf.getBackend()}", not "webgpu"; use dequantize4bit`,
    );
  }
  const u = upload(state);
  const backend = tf.backend() as unknown as {
    runWebGPUProgram(
      p: Dequant4bitProgram,
      inputs: tf.TensorInfo[],
      dtype: "float32",
      uniforms: { type: string; data: number[] }[],
    ): tf.TensorInfo;
  };
  const info = backend.runWebGPUProgram(
    new Dequant4bitProgram([...state.shape]),
    [u.codes, u.absmax, u.qmap],
    "float32",
    [{ type: "int32", data: [state.blocksize] }],
  );
  return tf.engine().makeTensorFromTensorInfo(info);
}

/** Frees the device copies of `state` (no-op when none were made). */
export function releaseOnDevice(state: Packed4bit): void {
  const u = uploads.get(state);
  if (!u) return;
  uploads.delete(state);
  uploadedBytes -= u.codes.size * 4 + u.absmax.size * 4 + u.qmap.size * 4;
  tf.dispose([u.codes, u.absmax, u.qmap]);
}

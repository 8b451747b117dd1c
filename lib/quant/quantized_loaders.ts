/**
 * Linear-layer factories for `loadModel`: quantize-on-load (NF4/FP4, streaming
 * tensor by tensor), pre-quantized bitsandbytes 4-bit, and GPTQ 4-bit.
 * @module
 */
import type { TensorReader } from "../io/safetensors_reader.ts";
import { DenseLinear, type LinearFactory } from "../models/linear.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { dequantize4bitInto, type Quant4bitState, quantize4bit } from "./blockwise_4bit.ts";
import { parseBnbWeight, type TensorEntry } from "./bnb_format.ts";
import { dequantizeGptq, type GptqFormat } from "./gptq.ts";
import { QuantizedLinear } from "./quantized_linear.ts";
import { dequantize4bitOnDevice, releaseOnDevice } from "../engine/webgpu_dequant.ts";
import { bitsPerParam } from "./storage.ts";
import { type QuantizeOption, resolveQuantize } from "./quantize_option.ts";
import { checkNotRelabelledBf16, checkWeightDtype } from "../io/weight_dtype_check.ts";

async function readChecked(
  reader: TensorReader,
  name: string,
  shape: [number, number],
): Promise<Float32Array> {
  if (!reader.has(name)) {
    throw new RangeError(`Checkpoint has no tensor "${name}" (expected shape [${shape}])`);
  }
  const info = reader.info(name);
  if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
    throw new TypeError(`Tensor "${name}" in ${info.file} has shape [${info.shape}], expected [${shape}]`);
  }
  checkWeightDtype(name, info); // BF16 bits labelled I16 and the like
  const data = await reader.readFloat32(name);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new RangeError(`Tensor "${name}" in ${info.file} holds a non-finite value at element ${i}`);
    }
  }
  checkNotRelabelledBf16(name, info, data);
  return data;
}

/** A {@linkcode QuantizedLinear} over a 4-bit state kept in host memory. */
export function fourBitLinear(name: string, state: Quant4bitState): QuantizedLinear {
  const [O, I] = state.shape;
  const device = { weight: () => dequantize4bitOnDevice(state), release: () => releaseOnDevice(state) };
  return new QuantizedLinear(name, O, I, { into: (out) => dequantize4bitInto(state, out), device }, {
    params: state.numel,
    bytes: Math.ceil(bitsPerParam(state) * state.numel / 8),
    dtype: state.quantType + (state.nested ? "+dq" : ""),
  });
}

/**
 * Quantizes each attention/MLP weight as it is read (the fp16/bf16 tensor is
 * dropped right after), so the checkpoint is never held whole in memory.
 */
export function quantizedLinearFactory(
  options: { quantize?: QuantizeOption | false; skipModules?: string[] },
): LinearFactory {
  const quantize = resolveQuantize(options.quantize || "nf4", "loadModel");
  const skip = options.skipModules ?? ["lm_head"];
  return async (name, reader, shape) => {
    const data = await readChecked(reader, `${name}.weight`, shape);
    if (skip.some((s) => name.includes(s))) return new DenseLinear(name, tf.tensor2d(data, shape));
    const state = quantize4bit(data, {
      quantize,
      shape,
      dtype: "float32",
    });
    return fourBitLinear(name, state);
  };
}

/** Reads every tensor of one bnb-serialized weight (packed codes + constants + quant_state). */
async function readBnbEntries(reader: TensorReader, weight: string): Promise<Map<string, TensorEntry>> {
  const out = new Map<string, TensorEntry>();
  const names = reader.names().filter((n) => n === weight || n.startsWith(`${weight}.`));
  for (const n of names) {
    const info = reader.info(n);
    out.set(n, { name: n, dtype: info.dtype, shape: [...info.shape], data: await reader.readBytes(n) });
  }
  return out;
}

/** Factory for HF-serialized bitsandbytes 4-bit checkpoints (`quantization_config.load_in_4bit`). */
export function bnbLinearFactory(file = "<checkpoint>"): LinearFactory {
  return async (name, reader, shape) => {
    const weight = `${name}.weight`;
    const entries = await readBnbEntries(reader, weight);
    if (!entries.has(`${weight}.absmax`) && !entries.has(`${weight}.nested_absmax`)) {
      // Modules listed in llm_int8_skip_modules stay in full precision.
      return new DenseLinear(name, tf.tensor2d(await readChecked(reader, weight, shape), shape));
    }
    const state = parseBnbWeight(weight, (n) => entries.get(n), { file });
    if (state.shape[0] !== shape[0] || state.shape[1] !== shape[1]) {
      throw new TypeError(
        `${file}: "${weight}" quant_state shape [${state.shape}] does not match the config's [${shape}]`,
      );
    }
    return fourBitLinear(name, state);
  };
}

/** GPTQ settings read from `quantize_config.json` / `quantization_config`. */
export interface GptqSettings {
  bits: number;
  groupSize: number;
  format: GptqFormat;
}

/** Factory for GPTQ 4-bit checkpoints (`qweight`, `qzeros`, `scales`, `g_idx`). */
export function gptqLinearFactory(settings: GptqSettings, file = "<checkpoint>"): LinearFactory {
  return async (name, reader, shape) => {
    const [O, I] = shape;
    if (!reader.has(`${name}.qweight`)) {
      return new DenseLinear(name, tf.tensor2d(await readChecked(reader, `${name}.weight`, shape), shape));
    }
    const need = ["qweight", "qzeros", "scales"];
    for (const k of need) {
      if (!reader.has(`${name}.${k}`)) {
        throw new RangeError(`${file}: GPTQ layer "${name}" has no "${name}.${k}"`);
      }
    }
    // Shapes first (a config that does not belong to the weights shows here), naming the tensor.
    const expectShape = (suffix: string, want: (number | undefined)[]) => {
      const got = reader.info(`${name}.${suffix}`).shape;
      if (got.length !== want.length || want.some((d, i) => d !== undefined && got[i] !== d)) {
        throw new TypeError(
          `${file}: "${name}.${suffix}" has shape [${got}], expected [${
            want.map((d) => d ?? "groups")
          }] for a [${O}, ${I}] layer; does config.json belong to these weights?`,
        );
      }
    };
    expectShape("qweight", [I / 8, O]);
    expectShape("qzeros", [undefined, O / 8]);
    expectShape("scales", [undefined, O]);
    const qweight = await reader.readTyped(`${name}.qweight`);
    const qzeros = await reader.readTyped(`${name}.qzeros`);
    const scales = await reader.readFloat32(`${name}.scales`);
    if (!(qweight instanceof Int32Array) || !(qzeros instanceof Int32Array)) {
      throw new TypeError(`${file}: "${name}.qweight" and ".qzeros" must be I32`);
    }
    const bad = scales.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new RangeError(`${file}: "${name}.scales" holds ${scales[bad]} at element ${bad}`);
    const groups = scales.length / O;
    let gIdx: Int32Array;
    if (reader.has(`${name}.g_idx`)) {
      const g = await reader.readTyped(`${name}.g_idx`);
      if (!(g instanceof Int32Array)) throw new TypeError(`${file}: "${name}.g_idx" must be I32`);
      gIdx = g;
    } else {
      const gs = settings.groupSize > 0 ? settings.groupSize : I;
      gIdx = Int32Array.from({ length: I }, (_, i) => Math.floor(i / gs));
    }
    const layer = { inFeatures: I, outFeatures: O, qweight, qzeros, scales, gIdx };
    // Validate once at load (errors name the file and layer), then dequantize on demand.
    try {
      dequantizeGptq(layer, { bits: settings.bits, format: settings.format });
    } catch (e) {
      (e as Error).message = `${file}: GPTQ layer "${name}": ${(e as Error).message}`;
      throw e;
    }
    const bytes = qweight.byteLength + qzeros.byteLength + groups * O * 2 + gIdx.byteLength;
    return new QuantizedLinear(
      name,
      O,
      I,
      () => dequantizeGptq(layer, { bits: settings.bits, format: settings.format }),
      {
        params: O * I,
        bytes,
        dtype: `gptq-${settings.bits}bit`,
      },
    );
  };
}

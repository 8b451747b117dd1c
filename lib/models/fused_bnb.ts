/**
 * Pre-quantized bitsandbytes 4-bit checkpoints with fused projections (a Phi-3 saved by
 * bitsandbytes): each q/k/v or gate/up part becomes a 4-bit layer over its rows of the fused weight.
 * Loaded on demand by `loadModel` (it pulls in the quantized loaders).
 * @module
 */
import type { TensorReader } from "../io/safetensors_reader.ts";
import type { LinearFactory } from "./linear.ts";
import type { LlamaConfig } from "./llama_config.ts";
import { partIndex } from "./fused_linears.ts";
import { bnbLinearFactory, fourBitLinear } from "../quant/quantized_loaders.ts";
import { parseBnbWeight, type TensorEntry } from "../quant/bnb_format.ts";
import type { Quant4bitState } from "../quant/blockwise_4bit.ts";

/**
 * The bitsandbytes 4-bit factory for fused checkpoints (a Phi-3 saved by bitsandbytes): the fused
 * weight's quant state is parsed once, and each part becomes a 4-bit layer over its rows' packed codes
 * and absmax blocks (with double quantization, the absmax values bitsandbytes reconstructs, kept as
 * fp32 for the part). A part must start and end on an absmax block boundary, which holds whenever
 * `in_features` is a multiple of the blocksize (every released model); otherwise the load is refused.
 * Parts of a full-precision fused weight (skipped modules) are read through the split reader.
 */
export function fusedBnbLinearFactory(config: LlamaConfig, file = "<checkpoint>"): LinearFactory {
  const base = bnbLinearFactory(file);
  const parts = partIndex(config);
  const states = new Map<string, Promise<Quant4bitState | undefined>>();
  const stateOf = (reader: TensorReader, weight: string) => {
    if (!states.has(weight)) {
      states.set(
        weight,
        (async () => {
          const names = reader.names().filter((n) => n.startsWith(`${weight}.`) || n === weight);
          if (!names.some((n) => n.endsWith(".absmax"))) return undefined; // kept in full precision
          const entries = new Map<string, TensorEntry>();
          for (const n of names) {
            const info = reader.info(n);
            entries.set(n, {
              name: n,
              dtype: info.dtype,
              shape: [...info.shape],
              data: await reader.readBytes(n),
            });
          }
          return parseBnbWeight(weight, (n) => entries.get(n), { file });
        })(),
      );
    }
    return states.get(weight)!;
  };
  return async (name, reader, shape) => {
    const p = parts.get(name);
    if (!p) return base(name, reader, shape);
    const fusedWeight = `${p.fusedModule}.weight`;
    const state = await stateOf(reader, fusedWeight);
    if (!state) return base(name, reader, shape); // dense fused weight: the split reader slices it
    const I = shape[1], bs = state.blocksize;
    if (state.shape[1] !== I || (p.start * I) % bs !== 0 || (p.rows * I) % bs !== 0) {
      throw new RangeError(
        `${file}: "${fusedWeight}" [${state.shape}] cannot be split into ${name} rows ${p.start}..${
          p.start + p.rows
        } on its ${bs}-element absmax blocks; load the full-precision checkpoint with { quantize: "nf4" }`,
      );
    }
    const from = p.start * I, n = p.rows * I;
    return fourBitLinear(name, {
      ...state,
      shape: [p.rows, I],
      numel: n,
      packed: state.packed.slice(from / 2, (from + n) / 2),
      absmax: state.absmax.slice(from / bs, (from + n) / bs),
      nested: undefined,
    });
  };
}

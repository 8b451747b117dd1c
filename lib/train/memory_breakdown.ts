/**
 * Memory breakdown of a training step by owner, from what the trainer owns and
 * the peak tfjs bytes measured during the step.
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { Optimizer } from "../optim/optimizer.ts";

/** Inputs measured around one step. */
export interface StepMemoryProbe {
  /** Peak `tf.memory().numBytes` during the step (from `tf.profile`). */
  peakBytes: number;
  /** `tf.memory().numBytes` when the step started (weights, adapters, tfjs-held optimizer state). */
  startBytes: number;
  /** Largest gradient bytes held at once during the step. */
  gradientBytes: number;
}

/**
 * Bytes per owner:
 * - `weights`: base weights resident in tfjs (fp32);
 * - `weights4bitHost`: packed 4-bit weights and constants kept in host memory (outside the wasm heap);
 * - `adapters`: LoRA / DyLoRA factors;
 * - `gradients`: the largest set of gradients held at once;
 * - `optimizer`: optimizer state (`Optimizer.stateBytes()`; 8-bit states live in host memory);
 * - `activations`: peak bytes during the step above the resident level, minus gradients
 *   (activations, recomputation buffers and temporaries).
 */
export function memoryBreakdown(
  model: LlamaForCausalLM,
  optimizer: Optimizer,
  probe: StepMemoryProbe,
): Record<string, number> {
  let weights = 0, host = 0, adapters = 0;
  for (const row of model.summary()) {
    if (row.kind === "adapter") adapters += row.bytes;
    else if (row.dtype.split("+").every((d) => d === "fp32")) weights += row.bytes;
    else {
      // Mixed rows (e.g. "nf4+dq+fp32") hold both: split by storage kind below.
      const dense = denseBytesOfKind(model, row.kind);
      weights += dense;
      host += row.bytes - dense;
    }
  }
  return {
    weights,
    weights4bitHost: host,
    adapters,
    gradients: probe.gradientBytes,
    optimizer: optimizer.stateBytes(),
    activations: Math.max(0, probe.peakBytes - probe.startBytes - probe.gradientBytes),
  };
}

function denseBytesOfKind(model: LlamaForCausalLM, kind: string): number {
  let bytes = 0;
  for (const lin of model.linears()) {
    const k = lin.name === "lm_head" ? "lm_head" : lin.name.includes(".self_attn.") ? "attention" : "mlp";
    if (k !== kind) continue;
    for (const s of lin.storage()) if (s.dtype === "fp32") bytes += s.bytes;
  }
  return bytes;
}

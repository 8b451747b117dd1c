/**
 * Memory breakdown of a training step by owner, from what the trainer owns and
 * the peak tfjs bytes measured during the step.
 * @module
 */
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import type { MemoryBreakdown } from "../engine/memory_parts.ts";
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** Inputs measured around one step. */
export interface StepMemoryProbe {
  /** Peak `tf.memory().numBytes` during the step (from `tf.profile`). */
  peakBytes: number;
  /** `tf.memory().numBytes` when the step started (weights, adapters, tfjs-held optimizer state). */
  startBytes: number;
  /** Largest gradient bytes held at once during the step. */
  gradientBytes: number;
  /** `tf.memory().numBytes` after the step (default: now). */
  endBytes?: number;
}

/**
 * Bytes per part, as the one {@linkcode MemoryBreakdown} type the planner predicts:
 * - `weights`: base weights resident in tfjs (fp32);
 * - `adapters`: adapter factors;
 * - `gradients`: the largest set of gradients held at once;
 * - `optimizerStates`: optimizer state held as tensors (live tensor bytes at the end of the
 *   step beyond weights and adapters, at most `Optimizer.stateBytes()`);
 * - `activations`: peak bytes during the step above the resident level, minus gradients
 *   (activations, recomputation buffers and temporaries; `workspace` is 0, counted here);
 * - `hostOffloaded`: packed 4-bit weights and constants plus optimizer state kept in host
 *   memory (8-bit moments: `stateBytes()` beyond the tensor-held part);
 * - `quantConstants`: 0 (the constants live with the 4-bit codes in host memory).
 */
export function memoryBreakdown(
  model: LlamaForCausalLM,
  optimizer: Optimizer,
  probe: StepMemoryProbe,
): MemoryBreakdown {
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
  const stateBytes = optimizer.stateBytes();
  // After the step the live tensors are the model's and the optimizer's (gradients are freed).
  const end = probe.endBytes ?? tf.memory().numBytes;
  const stateTensors = Math.min(stateBytes, Math.max(0, end - weights - adapters));
  return {
    weights,
    quantConstants: 0,
    adapters,
    gradients: probe.gradientBytes,
    optimizerStates: stateTensors,
    activations: Math.max(0, probe.peakBytes - probe.startBytes - probe.gradientBytes),
    workspace: 0,
    hostOffloaded: host + stateBytes - stateTensors,
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

/**
 * The one memory-breakdown type: what the trainer measures (`record.memory.breakdown`)
 * and what the planner predicts (`plan.breakdown`) have the same parts, meanings and
 * chart labels.
 * @module
 */

/** Memory by part, in bytes. */
export interface MemoryBreakdown {
  /** Base weights on the device (tfjs tensors; fp32 in our engine). */
  weights: number;
  /** Quantization constants on the device (0 in our engine: they stay with the 4-bit codes in host memory). */
  quantConstants: number;
  /** Adapter factors (LoRA / DyLoRA / DoRA). */
  adapters: number;
  /** Parameter gradients alive at the peak (the largest set held at once). */
  gradients: number;
  /** Optimizer state on the device (moments, projectors). */
  optimizerStates: number;
  /** Activations kept for backward and temporaries of the step. */
  activations: number;
  /** Transient buffers of the update or gradient function at the peak (the trainer counts them in activations). */
  workspace: number;
  /** Host memory, not in the device total: packed 4-bit weights and constants, 8-bit and paged optimizer state. */
  hostOffloaded: number;
}

/** The parts of a {@linkcode MemoryBreakdown}, in the order tables and charts show them. */
export const MEMORY_PARTS: readonly (keyof MemoryBreakdown)[] = [
  "weights",
  "quantConstants",
  "adapters",
  "gradients",
  "optimizerStates",
  "activations",
  "workspace",
  "hostOffloaded",
];

/** The device parts (everything but `hostOffloaded`), in the order tables and stacked bars show them. */
export const DEVICE_PARTS: readonly (Exclude<keyof MemoryBreakdown, "hostOffloaded">)[] = MEMORY_PARTS.filter(
  (p): p is Exclude<keyof MemoryBreakdown, "hostOffloaded"> => p !== "hostOffloaded",
);

/**
 * Human labels of the parts, for charts and tables.
 * @example
 * ```ts
 * import { MEMORY_PART_LABELS, MEMORY_PARTS } from "./memory_parts.ts";
 * if (MEMORY_PARTS.some((p) => !MEMORY_PART_LABELS[p])) throw new Error("a part without a label");
 * if (MEMORY_PART_LABELS.optimizerStates !== "Optimizer states") throw new Error("label");
 * ```
 */
export const MEMORY_PART_LABELS: Readonly<Record<keyof MemoryBreakdown, string>> = {
  weights: "Weights",
  quantConstants: "Quantization constants",
  adapters: "Adapters",
  gradients: "Gradients",
  optimizerStates: "Optimizer states",
  activations: "Activations",
  workspace: "Workspace",
  hostOffloaded: "Host memory",
};

/** The label of a part, or the key itself for a part this list does not know. */
export function memoryPartLabel(part: string): string {
  return (MEMORY_PART_LABELS as Record<string, string>)[part] ?? part;
}

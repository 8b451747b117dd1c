/**
 * Peak device memory of one fine-tuning step, by part, with the assumptions spelled out.
 *
 * Detailed accounting (the default), `P` parameters, `A` adapter parameters:
 * - weights: `P·w` (w = weight dtype bytes); qlora/qdylora keep decoder linears as 4-bit
 *   codes (½ B each) and everything else (embeddings, norms, lm_head) in the weight dtype.
 * - quantConstants: exact bitsandbytes absmax/nested constants per quantized tensor.
 * - adapters: `A·a` with `A = L · Σ_targets R·(in + out)` (a = adapter dtype bytes).
 * - gradients: one per trainable parameter in its dtype; GaLore layer-wise keeps only the
 *   largest single tensor's gradient alive (each is applied and freed during backward).
 * - optimizerStates: Adam m and v, 8 B/param in fp32 or 2 B/param + blockwise constants
 *   (blocks of 2048, fp32 absmax per moment) in 8 bits; GaLore keeps moments of projected
 *   `R × max(out, in)` matrices plus a `min(out, in) × R` projector per targeted linear;
 *   fp32 master weights (4 B/param) when `masterWeights`. Paged states move to `hostOffloaded`.
 * - activations: see `activations.ts`.
 * - workspace: a dequantized copy of the largest 4-bit matrix (qlora), the fp32 SVD input
 *   of the largest GaLore matrix (refresh steps), plus `overheadBytes`.
 * Gradient accumulation sums into the same gradient buffers, so it does not change the peak.
 * @module
 */

import { dtypeBytes } from "./_resolve.ts";
import { estimateActivations } from "./activations.ts";
import { countParamParts, linearModules } from "./model_shape.ts";
import type { PlanMethod, PlanSpec, ResolvedPlanSpec } from "./plan_spec.ts";
import { resolvePlanSpec } from "./plan_spec.ts";
import { quantTensorBytes } from "./quant_bits.ts";
import type { MemoryBreakdown } from "../engine/memory_parts.ts";
import { adapterKind } from "../adapters/registry.ts";
import { optimizerKind } from "../optim/registry.ts";

/** Bytes by part (the trainer's and the planner's one type). `hostOffloaded` is host memory, not in the device total. */
export type { MemoryBreakdown };

/** The answer of {@linkcode planMemory}. */
export interface MemoryPlan {
  method: PlanMethod;
  /** Device bytes at peak: the breakdown without `hostOffloaded`. */
  total: number;
  breakdown: MemoryBreakdown;
  /** Every assumption behind the numbers, as sentences. */
  assumptions: string[];
  /** Parameters of the model. */
  params: number;
  /** Parameters that receive gradients. */
  trainableParams: number;
  /** The resolved spec (re-plan with `{ ...plan.spec.input, … }`). */
  spec: ResolvedPlanSpec;
}

/** The bitsandbytes 8-bit optimizers quantize state blockwise in blocks of 2048. */
const STATE_BLOCK = 2048;

const isQuantized = (m: PlanMethod) => m === "qlora" || m === "qdylora";
const isAdapter = (m: PlanMethod) => m === "lora" || m === "qlora" || m === "dylora" || m === "qdylora";
const isGalore = (m: PlanMethod) => m === "galore" || m === "galore8bit";

/**
 * Plans peak device memory of one training step.
 *
 * @param spec model, method and training settings
 * @returns total bytes, bytes by part and the assumptions used
 * @example
 * ```ts
 * import { planMemory } from "./plan_memory.ts";
 * // The QLoRA seed: 10B with a 0.1B adapter needs ~160 / 41.6 / 11.6 GB.
 * const seed = { params: 10e9, adapterParams: 0.1e9, accounting: "qlora-seed" } as const;
 * const gb = (m: "full" | "lora" | "qlora") => planMemory({ ...seed, method: m }).total / 1e9;
 * if (gb("full") !== 160 || Math.abs(gb("lora") - 41.6) > 1e-9 || Math.abs(gb("qlora") - 11.6) > 1e-9) {
 *   throw new Error("seed figures");
 * }
 * const q = planMemory({ config: "7B", method: "qlora", gradientCheckpointing: true });
 * if (!(q.total < 8e9) || q.trainableParams !== 19988480) throw new Error(String(q.total));
 * ```
 */
export function planMemory(spec: PlanSpec): MemoryPlan {
  const s = resolvePlanSpec(spec);
  switch (s.accounting) {
    case "qlora-seed":
      return seedPlan(s);
    case "detailed":
      return detailedPlan(s);
  }
}

function adapterCount(s: ResolvedPlanSpec, notes: string[]): { count: number; rankPerLayer: number } {
  if (s.adapterParams !== undefined) {
    notes.push(`Adapter parameters given: ${s.adapterParams}.`);
    return { count: s.adapterParams, rankPerLayer: 0 };
  }
  if (!s.shape) {
    const count = s.params / 100;
    notes.push("No model shape: adapter taken as 1% of the parameters (the QLoRA seed's 0.1B for 10B).");
    return { count, rankPerLayer: 0 };
  }
  const mods = linearModules(s.shape).filter((m) =>
    s.targetModules === "all-linear" || s.targetModules.includes(m.name)
  );
  const kind = adapterKind(s.adapterKind);
  const perLayer = mods.reduce((acc, m) => acc + kind.params(m.inFeatures, m.outFeatures, s.r), 0);
  const what = s.method === "dylora" || s.method === "qdylora" ? "maximum rank" : "rank";
  notes.push(
    `${s.adapterKind === "dora" ? "DoRA" : "LoRA"} ${what} ${s.r} on ${
      mods.map((m) => m.name).join(", ")
    } of every layer: A [R, in] + B [out, R] each${s.adapterKind === "dora" ? " + a magnitude [out]" : ""}.`,
  );
  return { count: perLayer * s.shape.numHiddenLayers, rankPerLayer: s.r * mods.length };
}

function seedPlan(s: ResolvedPlanSpec): MemoryPlan {
  const notes = [
    "QLoRA seed accounting: bytes per parameter only, no activations or workspace; GB = 1e9 bytes.",
  ];
  const P = s.params;
  const b: MemoryBreakdown = {
    weights: 0,
    quantConstants: 0,
    adapters: 0,
    gradients: 0,
    optimizerStates: 0,
    activations: 0,
    workspace: 0,
    hostOffloaded: 0,
  };
  let trainable = P;
  switch (s.method) {
    case "full":
      notes.push(
        "Full fine-tune: fp16 weights 2 B + fp16 gradients 2 B + fp32 Adam state 12 B per parameter.",
      );
      b.weights = 2 * P;
      b.gradients = 2 * P;
      b.optimizerStates = 12 * P;
      break;
    case "lora":
    case "dylora":
    case "qlora":
    case "qdylora": {
      trainable = adapterCount(s, notes).count;
      if (isQuantized(s.method)) {
        notes.push("4-bit base at ~1 B/param (the seed's round figure: 10B in 4 bits ≈ 10 GB).");
        b.weights = P;
      } else {
        notes.push("16-bit base at 4 B/param (the seed counts fp16 weights plus fp16 gradient buffers).");
        b.weights = 2 * P;
        b.gradients = 2 * P;
      }
      notes.push("Adapter at 16 B/param: fp16 weights 2 B + gradients 2 B + fp32 Adam state 12 B.");
      b.adapters = 2 * trainable;
      b.gradients += 2 * trainable;
      b.optimizerStates = 12 * trainable;
      break;
    }
    case "galore":
    case "galore8bit":
      throw new RangeError(
        `planMemory: accounting "qlora-seed" covers full, lora, qlora, dylora and qdylora; use "detailed" for ${s.method}`,
      );
  }
  return finish(s, b, trainable, notes);
}

function finish(s: ResolvedPlanSpec, b: MemoryBreakdown, trainable: number, notes: string[]): MemoryPlan {
  const total = b.weights + b.quantConstants + b.adapters + b.gradients + b.optimizerStates + b.activations +
    b.workspace;
  return {
    method: s.method,
    total,
    breakdown: b,
    assumptions: notes,
    params: s.params,
    trainableParams: trainable,
    spec: s,
  };
}

/** Optimizer state of `elements`: `moments` tensors (the optimizer's registry row), 8-bit or fp32. */
function momentBytes(elements: number, eightBit: boolean, moments: number): number {
  return eightBit ? moments * (elements + Math.ceil(elements / STATE_BLOCK) * 4) : 4 * moments * elements;
}

function detailedPlan(s: ResolvedPlanSpec): MemoryPlan {
  const notes: string[] = [];
  const w = dtypeBytes(s.weightDtype);
  const c = dtypeBytes(s.computeDtype);
  const a = dtypeBytes(s.adapterDtype);
  const P = s.params;
  const parts = s.shape ? countParamParts(s.shape) : undefined;
  // Parts are scaled when `params` overrides the shape's own count (e.g. the seed's 10B).
  const scale = parts ? P / parts.total : 1;
  if (parts && scale !== 1) {
    notes.push(`Parameter parts scaled by ${scale.toFixed(4)} to match params = ${P}.`);
  }
  const linear = parts ? parts.linearWeights * scale : 0;
  const mods = s.shape ? linearModules(s.shape) : [];
  const L = s.shape?.numHiddenLayers ?? 0;
  const largestLinear = Math.max(0, ...mods.map((m) => m.inFeatures * m.outFeatures));
  const largestTensor = parts ? Math.max(largestLinear, parts.embeddings) * scale : P;
  const eightBit = s.method === "galore8bit" || s.optimizerState === "8bit" ||
    s.optimizerState === "paged8bit";
  const paged = s.optimizerState === "paged" || s.optimizerState === "paged8bit";
  const moments = optimizerKind(s.optimizer).cost.moments;
  const b: MemoryBreakdown = {
    weights: 0,
    quantConstants: 0,
    adapters: 0,
    gradients: 0,
    optimizerStates: 0,
    activations: 0,
    workspace: s.overheadBytes,
    hostOffloaded: 0,
  };
  notes.push(
    `Weights stored in ${s.weightDtype}, compute and activations in ${s.computeDtype}; GB = 1e9 bytes.`,
  );

  // Weights (and 4-bit constants).
  if (isQuantized(s.method)) {
    if (!parts) throw new RangeError(`planMemory: ${s.method} needs a config (which matrices are quantized)`);
    let codes = 0, constants = 0;
    for (const m of mods) {
      const q = quantTensorBytes(m.inFeatures * m.outFeatures, s.quantize.doubleQuant, s.quantize.blocksize);
      codes += q.codes;
      constants += q.constants;
    }
    b.weights = codes * L * scale + (P - linear) * w;
    b.quantConstants = constants * L * scale;
    notes.push(
      `Decoder linears in ${s.quantize.type.toUpperCase()} (blocksize ${s.quantize.blocksize}, double quant ${s.quantize.doubleQuant}); ` +
        `embeddings, norms and lm_head in ${s.weightDtype}.`,
    );
    b.workspace += largestLinear * c;
    notes.push("Workspace: one dequantized copy of the largest 4-bit matrix at a time.");
  } else {
    b.weights = P * w;
  }

  // Trainable parameters: gradients and optimizer state.
  let trainable: number;
  let rankPerLayer = 0;
  let states: number;
  if (isAdapter(s.method)) {
    const ad = adapterCount(s, notes);
    trainable = ad.count;
    rankPerLayer = ad.rankPerLayer;
    b.adapters = trainable * a;
    b.gradients = trainable * a;
    states = momentBytes(trainable, eightBit, moments);
    notes.push(`Adapters and their gradients in ${s.adapterDtype}; the base is frozen (no gradients).`);
  } else if (isGalore(s.method)) {
    if (!parts) throw new RangeError(`planMemory: ${s.method} needs a config (matrix shapes to project)`);
    trainable = P;
    const R = s.galore.r;
    let projected = 0, full = P - linear, projectors = 0;
    for (const m of mods) {
      const lo = Math.min(m.inFeatures, m.outFeatures), hi = Math.max(m.inFeatures, m.outFeatures);
      if (R < lo) {
        projected += R * hi * L * scale;
        projectors += lo * R * L * scale;
      } else {
        full += lo * hi * L * scale;
      }
    }
    states = momentBytes(projected, eightBit, moments) + momentBytes(full, eightBit, moments) +
      projectors * w;
    notes.push(
      `GaLore rank ${R} on every decoder linear: Adam moments of R × max(out, in), projector min(out, in) × R in ` +
        `${s.weightDtype}; embeddings, norms and lm_head use plain Adam.`,
    );
    b.gradients = s.layerwise ? largestTensor * w : P * w;
    if (s.layerwise) {
      notes.push(
        "Layer-wise: each gradient is applied and freed in backward; peak = the largest tensor's gradient.",
      );
    }
    b.workspace += largestLinear * 4;
    notes.push("Workspace: fp32 SVD input of the largest matrix at projector refreshes.");
  } else {
    trainable = P;
    b.gradients = P * w;
    states = momentBytes(P, eightBit, moments);
  }
  if (s.masterWeights && !isAdapter(s.method)) {
    states += trainable * 4;
    notes.push("fp32 master weights (4 B/param) counted with the optimizer state.");
  }
  notes.push(
    eightBit
      ? `${s.optimizer} moments in 8 bits (${moments} B/param + fp32 absmax per ${STATE_BLOCK}-block).`
      : `${s.optimizer} moments in fp32 (${4 * moments} B/param).`,
  );
  if (paged) {
    b.hostOffloaded = states;
    notes.push("Paged optimizer: state counted as host memory (hostOffloaded), not device memory.");
  } else {
    b.optimizerStates = states;
  }

  // Activations.
  if (s.shape) {
    const act = estimateActivations(s.shape, {
      microBatch: s.microBatch,
      seqLen: s.seqLen,
      computeDtype: s.computeDtype,
      gradientCheckpointing: s.gradientCheckpointing,
      adapterRankPerLayer: rankPerLayer,
    });
    b.activations = act.total;
    notes.push(
      `Activations for micro-batch ${s.microBatch} × ${s.seqLen} tokens: per layer B·T·e·(2D + 2H·d + 2K·d + 2H·T + MLP), ` +
        `MLP = 2D + 4I (SwiGLU) or 2D + 2I (GELU); ` +
        (s.gradientCheckpointing
          ? "checkpointing keeps L·B·T·D·e layer inputs + one layer; "
          : "all L layers kept; ") +
        "plus fp32 logits and their gradient 2·B·T·V·4.",
    );
  } else {
    notes.push("No model shape: activations and workspace not estimated (give config to include them).");
  }
  notes.push(
    `Gradient accumulation (${s.gradAccumSteps} steps) reuses the gradient buffers: no change to the peak.`,
  );
  if (s.overheadBytes > 0) notes.push(`Fixed overhead ${s.overheadBytes} bytes in workspace.`);
  return finish(s, b, trainable, notes);
}

/**
 * Optimizer state and update temporaries for the engine estimate, from the optimizer
 * registry (`lib/optim/registry.ts`: each optimizer's moments, 8-bit storage, GaLore
 * projection and update temporaries), so a new optimizer is costed by its registry row.
 * @module
 */
import { momentStateBytes, optimizerKind } from "../optim/registry.ts";

/** A trainable tensor as the optimizer sees it (its name decides GaLore projection). */
export interface ParamShape {
  name: string;
  shape: number[];
}

const numel = (p: ParamShape) => p.shape.reduce((a, b) => a * b, 1);

/**
 * GaLore projection of a decoder linear `[M, N]` (projType "std"): moment and projector
 * elements, or undefined when the tensor is not projected.
 *
 * @example
 * ```ts
 * import { galoreShape } from "./engine_optimizer.ts";
 * // [8, 32] at rank 4: M < N projects the left side: moments [4, 32], projector [8, 4]
 * const g = galoreShape({ name: "model.layers.0.mlp.up_proj.weight", shape: [8, 32] }, 4);
 * if (g?.moment !== 128 || g.projector !== 32) throw new Error(JSON.stringify(g));
 * if (galoreShape({ name: "model.norm.weight", shape: [8] }, 4) !== undefined) throw new Error("norms are not projected");
 * ```
 */
export function galoreShape(p: ParamShape, rank: number): { moment: number; projector: number } | undefined {
  if (!/attn|mlp/.test(p.name) || p.shape.length !== 2) return undefined;
  const [M, Nn] = p.shape;
  // std: M ≥ N projects the right side (N > rank), else the left (M > rank); a side
  // whose dimension is ≤ rank stays the identity (full-size moments, no projector).
  if (M >= Nn) return Nn > rank ? { moment: M * rank, projector: Nn * rank } : undefined;
  return M > rank ? { moment: rank * Nn, projector: M * rank } : undefined;
}

/** Elements of the temporaries one update of `p` holds at its end (all in one `tf.tidy`). */
export function updateTemporaries(optimizer: string, p: ParamShape, galoreRank: number): number {
  const cost = optimizerKind(optimizer).cost;
  const pr = cost.galore ? galoreShape(p, galoreRank) : undefined;
  return cost.updateTemporaries(numel(p), pr?.moment);
}

/**
 * Optimizer state of `params`: tensor bytes (fp32 moments, GaLore projectors) and host
 * bytes (8-bit moments).
 *
 * @example
 * ```ts
 * import { optimizerStateBytes } from "./engine_optimizer.ts";
 * const ps = [{ name: "w", shape: [100, 100] }];
 * if (optimizerStateBytes("adamw", ps, 8).tensor !== 2 * 4 * 1e4) throw new Error("two fp32 moments");
 * if (optimizerStateBytes("lion", ps, 8).tensor !== 4 * 1e4) throw new Error("one fp32 moment");
 * ```
 */
export function optimizerStateBytes(
  optimizer: string,
  params: ParamShape[],
  galoreRank: number,
): { tensor: number; host: number } {
  const cost = optimizerKind(optimizer).cost;
  let tensor = 0, host = 0;
  for (const p of params) {
    const pr = cost.galore ? galoreShape(p, galoreRank) : undefined;
    if (pr) tensor += 4 * pr.projector;
    const m = momentStateBytes(cost, pr ? pr.moment : numel(p));
    tensor += m.tensor;
    host += m.host;
  }
  return { tensor, host };
}

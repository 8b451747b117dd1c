/**
 * Optimizer choice by name for `train()` and recipes.
 * @module
 */
import type { Optimizer } from "../optim/optimizer.ts";
import { OPTIMIZER_NAMES, optimizerKind, type OptimizerName } from "../optim/registry.ts";

/** The optimizer names accepted by `train()`, recipes and the planner (one list: `OPTIMIZERS`' keys). */
export { OPTIMIZER_NAMES, type OptimizerName };
/** GaLore options as written in `train()` options and recipes. */
export interface GaLoreTrainOptions {
  /** Projection rank (`r`, as every rank in nbtune). @default {hidden / 4} */
  r?: number;
  /** Steps between projector refreshes. @default {200} */
  updateProjGap?: number;
  /** Update scale (like LoRA's alpha). @default {0.25} */
  scale?: number;
  /** Which side to project. @default {"std"} */
  projType?: "std" | "reverse_std" | "left" | "right" | "full";
  /** Update each block as soon as its gradients exist (no accumulation). @default {false} */
  layerwise?: boolean;
  /**
   * Also apply the gradient outside the subspace, scaled like Fira (no extra state; see
   * `createGaLoreAdamW`). @default {false}
   */
  residual?: boolean;
}

/** Hyper-parameters shared by the AdamW family. */
export interface AdamFamilyOptions {
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** Creates an optimizer from its name (a row of `OPTIMIZERS` in `lib/optim/registry.ts`). */
export function createOptimizer(
  name: OptimizerName,
  adam: AdamFamilyOptions,
  galore: GaLoreTrainOptions & { defaultRank: number },
): Promise<Optimizer> | Optimizer {
  const { weightDecay = 0, beta1, beta2, eps } = adam;
  return optimizerKind(name).create({ weightDecay, beta1, beta2, eps, galore });
}

/**
 * Optimizer choice by name for `train()` and recipes.
 * @module
 */
import { createAdamW } from "../optim/adamw.ts";
import { createAdamW8bit } from "../optim/adamw8bit.ts";
import type { Optimizer } from "../optim/optimizer.ts";

/** The optimizer names accepted by `train()`, recipes and the planner (one list). */
export const OPTIMIZER_NAMES = ["adamw", "adamw8bit", "galore", "galore8bit"] as const;

/** Optimizer names accepted by `train()`. */
export type OptimizerName = (typeof OPTIMIZER_NAMES)[number];

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
}

/** Hyper-parameters shared by the AdamW family. */
export interface AdamFamilyOptions {
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** Creates an optimizer from its name. */
export function createOptimizer(
  name: OptimizerName,
  adam: AdamFamilyOptions,
  galore: GaLoreTrainOptions & { defaultRank: number },
): Promise<Optimizer> | Optimizer {
  const { weightDecay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 } = adam;
  switch (name) {
    case "adamw":
      return createAdamW({ weightDecay, beta1, beta2, eps });
    case "adamw8bit":
      return createAdamW8bit({ weightDecay, beta1, beta2, eps });
    case "galore":
    case "galore8bit":
      return import("../optim/galore_adamw.ts").then(({ createGaLoreAdamW }) =>
        createGaLoreAdamW({
          weightDecay,
          beta1,
          beta2,
          eps,
          rank: galore.r ?? galore.defaultRank,
          updateProjGap: galore.updateProjGap ?? 200,
          scale: galore.scale ?? 0.25,
          projType: galore.projType ?? "std",
          eightBit: name === "galore8bit",
        })
      );
    default:
      throw new RangeError(`unknown optimizer "${name}" (use adamw, adamw8bit, galore or galore8bit)`);
  }
}

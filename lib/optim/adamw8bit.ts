/**
 * 8-bit AdamW in the manner of bitsandbytes' blockwise 8-bit optimizers
 * (Dettmers et al. 2022): the same update as {@linkcode createAdamW}, but m and v are
 * stored as one byte per element with a per-block fp32 absmax, m with the signed and v
 * with the unsigned dynamic code table. Each step dequantizes, updates in fp32 and
 * requantizes.
 *
 * The quantized state lives in host (JS) memory — `Uint8Array` codes and `Float32Array`
 * absmax — not in tfjs tensors: the paged/offloaded-optimizer idea applied to the
 * wasm heap, which stays free for weights and activations.
 *
 * Blocksize: 256 by default, the block size bitsandbytes uses for its blockwise 8-bit
 * optimizer states (`Optimizer2State` allocates `ceil(n / 256)` absmax values); 2048 is
 * the default of its standalone `quantize_blockwise`. Tensors with fewer than
 * `minSize8bit` (4096) elements keep fp32 moments like bnb's `min_8bit_size`.
 * @module
 */
import type { ParamGrad } from "./optimizer.ts";
import {
  checkStateHeader,
  type OptimizerState,
  type StatefulOptimizer,
  type StateTensor,
  stepsFromJson,
  stepsToJson,
} from "./optimizer_state.ts";
import { adamFields } from "./_options.ts";
import { defineOptions, type FieldsOf, integer } from "../options/schema.ts";
import { Moments8bit } from "./_moments_8bit.ts";
import { adamWStep } from "./_adam_step.ts";

/** Options for {@linkcode createAdamW8bit}. */
export interface AdamW8bitOptions {
  /** Decay of the first moment. @default {0.9} */
  beta1?: number;
  /** Decay of the second moment. @default {0.999} */
  beta2?: number;
  /** Added to the bias-corrected √v. @default {1e-8} */
  eps?: number;
  /** Decoupled weight decay (multiplied by lr). @default {0} */
  weightDecay?: number;
  /** Elements per quantization block (one fp32 absmax each). @default {256} */
  blocksize?: number;
  /** Tensors smaller than this keep fp32 moments. @default {4096} */
  minSize8bit?: number;
}

/**
 * Fills defaults, rejects unknown keys (TypeError) and out-of-range values (RangeError).
 *
 * @example
 * ```ts
 * import { resolveAdamW8bitOptions } from "./adamw8bit.ts";
 * const o = resolveAdamW8bitOptions({});
 * if (o.blocksize !== 256 || o.minSize8bit !== 4096) throw new Error("defaults");
 * let threw = false;
 * try { resolveAdamW8bitOptions({ blocksize: 0 }); } catch (e) { threw = e instanceof RangeError; }
 * if (!threw) throw new Error("blocksize must be positive");
 * ```
 */
export function resolveAdamW8bitOptions(options: AdamW8bitOptions = {}): Required<AdamW8bitOptions> {
  return adamW8bitSchema.parse(options);
}

/** The schema of {@linkcode createAdamW8bit}'s options. */
export const adamW8bitSchema = defineOptions(
  "createAdamW8bit",
  {
    ...adamFields,
    blocksize: integer("Elements per quantization block (one fp32 absmax each).", { min: 1, default: 256 }),
    minSize8bit: integer("Tensors smaller than this keep fp32 moments.", { min: 0, default: 4096 }),
  } satisfies FieldsOf<AdamW8bitOptions>,
  { renamed: { betas: "beta1 and beta2", weight_decay: "weightDecay" } },
);

/**
 * Creates an 8-bit AdamW optimizer whose states live in host memory.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
 * import { initEngine } from "../engine/backend.ts";
 * import { createAdamW8bit } from "./adamw8bit.ts";
 * await initEngine({ backend: "cpu" });
 * const w = tf.variable(tf.ones([64, 128])); // 8192 elements ≥ minSize8bit: 8-bit states
 * const g = tf.fill([64, 128], 0.5);
 * const opt = createAdamW8bit();
 * opt.step([{ name: "w", variable: w, grad: g }], 0.01);
 * if (Math.abs(w.dataSync()[0] - 0.99) > 1e-5) throw new Error("first step is −lr·sign(g)");
 * // 2 bytes per element + 2 fp32 absmax per block of 256
 * if (opt.stateBytes() !== 2 * 8192 + 2 * 4 * 32) throw new Error(`${opt.stateBytes()}`);
 * opt.dispose(); g.dispose(); w.dispose();
 * ```
 */
export function createAdamW8bit(options: AdamW8bitOptions = {}): StatefulOptimizer {
  const o = resolveAdamW8bitOptions(options);
  const moments = new Moments8bit(o, o.blocksize, o.minSize8bit);
  const steps = new Map<string, number>();
  return {
    name: "adamw8bit",
    step(params: ParamGrad[], lr: number): void {
      adamWStep("AdamW8bit.step()", params, lr, moments, steps, o.weightDecay);
    },
    stateBytes: () => moments.bytes(),
    saveState(): OptimizerState {
      const tensors: Record<string, StateTensor> = {};
      moments.exportInto(tensors);
      return {
        name: "adamw8bit",
        meta: {
          ...{
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            blocksize: o.blocksize,
            minSize8bit: o.minSize8bit,
          },
          steps: stepsToJson(steps),
        },
        tensors,
      };
    },
    loadState(state: OptimizerState): void {
      checkStateHeader(state, "adamw8bit", {
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        blocksize: o.blocksize,
        minSize8bit: o.minSize8bit,
      }, "AdamW8bit.loadState()");
      moments.importFrom(state.tensors);
      stepsFromJson(steps, state.meta.steps, "AdamW8bit.loadState()");
    },
    dispose(): void {
      moments.dispose();
      steps.clear();
    },
  };
}

/**
 * The interface every optimizer implements (AdamW, 8-bit AdamW, GaLore, …).
 *
 * The trainer hands an optimizer a list of named parameters with their gradients
 * (already accumulated, normalised and clipped); the optimizer updates each
 * `variable` in place with `assign` and keeps its own state. It may be called
 * with a subset of the parameters (layer-wise stepping calls it once per block).
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs-core@4.22.0";

/** One trainable parameter and its gradient for this step. */
export interface ParamGrad {
  /** Stable unique name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** The parameter, updated in place. */
  variable: tf.Variable;
  /** Gradient, same shape as `variable`. Owned by the caller (the optimizer must not dispose it). */
  grad: tf.Tensor;
}

/** A stateful optimizer. */
export interface Optimizer {
  /** Short name for logs ("adamw", "galore8bit", …). */
  readonly name: string;
  /**
   * Applies one update to every parameter in `params` with learning rate `lr`.
   * Each parameter's step counter advances independently, so calling `step` once
   * per block (layer-wise) equals one call with all parameters.
   */
  step(params: ParamGrad[], lr: number): void;
  /** Bytes of optimizer state held (moments, projectors, quantization constants). */
  stateBytes(): number;
  /** Frees all state tensors. */
  dispose(): void;
}

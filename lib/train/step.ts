/**
 * One optimizer step in the three ways the trainer can run it:
 * - `"full"`: one tape over the whole model per micro-batch, gradients summed;
 * - `"checkpointed"`: block-wise backward with recomputation, gradients summed;
 * - `"layerwise"`: block-wise backward, each block stepped as soon as its
 *   gradients exist (no accumulation, no global-norm clipping).
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { NamedParam } from "../models/linear.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { accumulateGradients, clipByGlobalNorm } from "./accumulate.ts";
import type { MicroBatch } from "./batching.ts";
import { blockwiseBackward } from "./blockwise.ts";
import { withPhase } from "../engine/kernel_timer.ts";

/** How gradients are produced and applied. */
export type StepMode = "full" | "checkpointed" | "layerwise";

/** Result of {@linkcode runStep}. */
export interface StepResult {
  /** Mean loss per target token. */
  loss: number;
  tokens: number;
  /** Global gradient norm before clipping (layer-wise: computed from each block's gradients). */
  gradNorm: number;
  /** Largest gradient bytes held at once. */
  gradientBytes: number;
}

function sumSquares(grads: tf.Tensor[]): number {
  return tf.tidy(() => grads.length ? tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0] : 0);
}

function nonFinite(label: string, what: string, v: number): RangeError {
  return new RangeError(
    `${label}: ${what} is ${v}; no weights were changed. Lower the learning rate or check the data.`,
  );
}

/** Runs forward, backward and the optimizer update for one step. */
export function runStep(
  model: LlamaForCausalLM,
  params: NamedParam[],
  micro: MicroBatch[],
  optimizer: Optimizer,
  options: { lr: number; maxGradNorm: number; mode: StepMode; label: string },
): StepResult {
  const { lr, label } = options;
  const total = micro.reduce((s, b) => s + b.numTargets, 0);
  if (total === 0) throw new RangeError(`${label}: the batch has no target tokens (all labels are -100?)`);
  const bytes = (ts: tf.Tensor[]) => ts.reduce((s, t) => s + t.size * 4, 0);

  if (options.mode === "layerwise") {
    if (micro.length !== 1) {
      throw new RangeError(`${label}: layer-wise updates take one micro-batch per step`);
    }
    let sq = 0, peak = 0;
    const loss = blockwiseBackward(model, micro[0], total, (ps, gs) => {
      sq += sumSquares(gs);
      peak = Math.max(peak, bytes(gs));
      withPhase(
        "optimizer",
        () => optimizer.step(ps.map((p, i) => ({ name: p.name, variable: p.variable, grad: gs[i] })), lr),
      );
    });
    if (!Number.isFinite(loss)) throw nonFinite(label, "the loss", loss);
    return { loss, tokens: total, gradNorm: Math.sqrt(sq), gradientBytes: peak };
  }

  let grads: tf.Tensor[];
  let loss: number;
  if (options.mode === "checkpointed") {
    const index = new Map(params.map((p, i) => [p.variable, i]));
    const acc: (tf.Tensor | undefined)[] = params.map(() => undefined);
    loss = 0;
    for (const [k, mb] of micro.entries()) {
      if (mb.numTargets === 0) continue;
      const l = blockwiseBackward(model, mb, total, (ps, gs) => {
        ps.forEach((p, j) => {
          const i = index.get(p.variable)!;
          const prev = acc[i];
          acc[i] = prev ? tf.add(prev, gs[j]) : gs[j].clone();
          prev?.dispose();
        });
      });
      if (!Number.isFinite(l)) {
        acc.forEach((t) => t?.dispose());
        throw nonFinite(`${label} (micro-batch ${k + 1}/${micro.length})`, "the loss", l);
      }
      loss += l;
    }
    grads = acc.map((t, i) => t ?? tf.zerosLike(params[i].variable));
  } else {
    const r = withPhase(
      "forward + backward (one tape)",
      () => accumulateGradients(model, params, micro, { label }),
    );
    grads = r.grads;
    loss = r.loss;
  }
  const gradientBytes = bytes(grads);
  const clipped = withPhase("optimizer", () => clipByGlobalNorm(grads, options.maxGradNorm));
  if (!Number.isFinite(clipped.norm)) {
    clipped.grads.forEach((g) => g.dispose());
    throw nonFinite(label, "the gradient norm", clipped.norm);
  }
  withPhase(
    "optimizer",
    () =>
      optimizer.step(
        params.map((p, i) => ({ name: p.name, variable: p.variable, grad: clipped.grads[i] })),
        lr,
      ),
  );
  clipped.grads.forEach((g) => g.dispose());
  return { loss, tokens: total, gradNorm: clipped.norm, gradientBytes };
}

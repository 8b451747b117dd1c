/**
 * One optimizer step in the three ways the trainer can run it:
 * - `"full"`: one tape over the whole model per micro-batch (no recomputation), gradients summed;
 * - `"checkpointed"`: block-wise backward with recomputation, gradients summed;
 * - `"layerwise"`: block-wise backward, each block stepped as soon as its
 *   gradients exist (no accumulation; clipping as `layerwiseClip` says, see layerwise_clip.ts).
 *
 * When every block is LoRA over a frozen base (`handWrittenBackward`), blocks are differentiated
 * by the hand-written backward (`llama_block_grad.ts`) instead of the tape: `"full"` keeps what
 * each block's backward needs from the forward (no recomputation), the other two recompute.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { NamedParam } from "../models/linear.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { accumulateGradients, clipByGlobalNorm } from "./accumulate.ts";
import type { MicroBatch } from "./batching.ts";
import { blockwiseBackward, handWrittenBackward } from "./blockwise.ts";
import { withPhase } from "../engine/kernel_timer.ts";
import { checkSaturated, DivergenceError, firstNonFinite, type StepGuard } from "./divergence.ts";
import { restoreLayerRng, snapshotLayerRng } from "./layer_rng.ts";
import { type LayerwiseClip, layerwiseClipScale, needsNormPrepass } from "./layerwise_clip.ts";

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
  options: {
    lr: number;
    maxGradNorm: number;
    mode: StepMode;
    label: string;
    guard?: StepGuard;
    /** Layer-wise: how to clip (see layerwise_clip.ts). @default {"prepass"} */
    layerwiseClip?: LayerwiseClip;
    /** Layer-wise `"previous"` clipping: the last step's global norm (undefined on a run's first step). */
    previousGradNorm?: number;
  },
): StepResult {
  const { lr, label, guard } = options;
  const total = micro.reduce((s, b) => s + b.numTargets, 0);
  if (total === 0) throw new RangeError(`${label}: the batch has no target tokens (all labels are -100?)`);
  const bytes = (ts: tf.Tensor[]) => ts.reduce((s, t) => s + t.size * 4, 0);
  const K = micro.length;
  // The divergence guard's checks (see divergence.ts); no-ops without a guard.
  const checkLoss = (loss: number, k?: number) => {
    if (!guard) return;
    const mb = k === undefined ? undefined : `${k + 1}/${K}`;
    if (!Number.isFinite(loss)) {
      const bad = firstNonFinite(params.map((p) => p.variable));
      throw new DivergenceError({
        step: guard.step,
        microBatch: mb,
        parameter: bad >= 0 ? `${params[bad].name} (its value)` : undefined,
        lr,
        reason: `the loss is ${loss}`,
        weightsChanged: false,
      });
    }
    if (k === undefined) guard.checkLoss(loss);
  };
  const checkGrads = (ps: NamedParam[], gs: tf.Tensor[], k: number, updated: string[] = []) => {
    if (!guard) return;
    const bad = firstNonFinite(gs);
    if (bad < 0) return;
    const v = tf.tidy(() => tf.sum(gs[bad]).dataSync()[0]);
    tf.dispose(gs);
    throw new DivergenceError({
      step: guard.step,
      microBatch: `${k + 1}/${K}`,
      parameter: ps[bad].name,
      lr,
      reason: `its gradient holds non-finite values (sum ${v})${
        updated.length
          ? `; already updated by this step (layerwiseCheck "per-block"): ${updated.join(", ")}`
          : ""
      }`,
      weightsChanged: updated.length > 0,
    });
  };
  const checkWeights = (ps: NamedParam[]) => {
    if (!guard) return;
    const bad = firstNonFinite(ps.map((p) => p.variable));
    if (bad >= 0) {
      throw new DivergenceError({
        step: guard.step,
        parameter: ps[bad].name,
        lr,
        reason: "the optimizer update itself made this weight non-finite (its gradients were finite)",
        weightsChanged: true,
      });
    }
  };

  // LoRA over a frozen base: the hand-written block backward (no tape; no recompute unless checkpointing).
  const handWritten = handWrittenBackward(model).ok;
  const how = (recompute: boolean) =>
    handWritten ? (recompute ? "hand-written-recompute" : "hand-written") : "tape";
  if (options.mode === "layerwise") {
    if (micro.length !== 1) {
      throw new RangeError(`${label}: layer-wise updates take one micro-batch per step`);
    }
    const clip = options.layerwiseClip ?? "prepass";
    const { maxGradNorm, previousGradNorm } = options;
    let globalNorm: number | undefined;
    if (guard?.layerwiseCheck === "prepass" || needsNormPrepass(clip, maxGradNorm, previousGradNorm)) {
      // Check the loss and every block's gradients before any block is updated, and sum their
      // squared norms for clipping (each block's gradients are freed at once); the dropout
      // streams are rewound so the updating pass sees the same masks.
      const rng = snapshotLayerRng(model);
      let pre = 0;
      const l = blockwiseBackward(
        model,
        micro[0],
        total,
        (ps, gs) => {
          checkGrads(ps, gs, 0);
          pre += sumSquares(gs);
        },
        (l) => checkLoss(l),
        how(true),
      );
      restoreLayerRng(model, rng);
      checkSaturated(guard, lr, pre, l);
      globalNorm = Math.sqrt(pre);
    }
    const totalSize = params.reduce((s, p) => s + p.variable.size, 0);
    let sq = 0, peak = 0;
    const updated: string[] = [];
    const loss = blockwiseBackward(
      model,
      micro[0],
      total,
      (ps, gs) => {
        checkGrads(ps, gs, 0, updated);
        const blockSquares = sumSquares(gs);
        sq += blockSquares;
        peak = Math.max(peak, bytes(gs));
        const c = layerwiseClipScale(clip, {
          maxGradNorm,
          globalNorm,
          previousNorm: previousGradNorm,
          blockSquares,
          blockSize: ps.reduce((s, p) => s + p.variable.size, 0),
          totalSize,
        });
        withPhase("optimizer", () => {
          const clipped = c < 1 ? gs.map((g) => tf.mul(g, c)) : gs;
          try {
            optimizer.step(ps.map((p, i) => ({ name: p.name, variable: p.variable, grad: clipped[i] })), lr);
          } finally {
            if (clipped !== gs) tf.dispose(clipped);
          }
        });
        updated.push(ps[0].name.match(/^model\.layers\.\d+/)?.[0] ?? ps[0].name);
        checkWeights(ps);
      },
      (l) => checkLoss(l),
      how(true),
    );
    if (!Number.isFinite(loss)) throw nonFinite(label, "the loss", loss);
    return { loss, tokens: total, gradNorm: Math.sqrt(sq), gradientBytes: peak };
  }

  let grads: tf.Tensor[];
  let loss: number;
  if (options.mode === "checkpointed" || handWritten) {
    const index = new Map(params.map((p, i) => [p.variable, i]));
    const acc: (tf.Tensor | undefined)[] = params.map(() => undefined);
    loss = 0;
    for (const [k, mb] of micro.entries()) {
      if (mb.numTargets === 0) continue;
      const l = blockwiseBackward(model, mb, total, (ps, gs) => {
        try {
          checkGrads(ps, gs, k);
        } catch (e) {
          acc.forEach((t) => t?.dispose());
          throw e;
        }
        ps.forEach((p, j) => {
          const i = index.get(p.variable)!;
          const prev = acc[i];
          acc[i] = prev ? tf.add(prev, gs[j]) : gs[j].clone();
          prev?.dispose();
        });
      }, (l) => {
        try {
          checkLoss(l, k);
        } catch (e) {
          acc.forEach((t) => t?.dispose());
          throw e;
        }
      }, how(options.mode === "checkpointed"));
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
      () =>
        accumulateGradients(model, params, micro, {
          label,
          onMicroBatch: (l, gs, k) => {
            checkLoss(l, k);
            checkGrads(params, gs, k);
          },
        }),
    );
    grads = r.grads;
    loss = r.loss;
  }
  const gradientBytes = bytes(grads);
  try {
    checkLoss(loss); // the step's loss against its recent level
  } catch (e) {
    tf.dispose(grads);
    throw e;
  }
  const clipped = withPhase("optimizer", () => clipByGlobalNorm(grads, options.maxGradNorm));
  if (!Number.isFinite(clipped.norm)) {
    clipped.grads.forEach((g) => g.dispose());
    throw nonFinite(label, "the gradient norm", clipped.norm);
  }
  try {
    checkSaturated(guard, lr, clipped.norm, loss);
  } catch (e) {
    tf.dispose(clipped.grads);
    throw e;
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
  checkWeights(params);
  return { loss, tokens: total, gradNorm: clipped.norm, gradientBytes };
}

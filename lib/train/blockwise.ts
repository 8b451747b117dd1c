/**
 * Block-by-block backward pass with activation recomputation.
 *
 * The forward pass keeps only each block's input `h_i` (`[B, T, D]`), not the
 * block's internals. The backward pass then walks the blocks from last to first:
 * it recomputes block i from `h_i` under a gradient tape, takes the gradient of
 * its output against `dh_{i+1}`, and hands that block's parameter gradients to a
 * callback before moving on. This gives:
 * - gradient checkpointing (only block inputs are stored; one extra forward), and
 * - layer-wise updates (the callback applies the optimizer step for the block at
 *   once and frees its gradients, so a full set of gradients never exists), as in
 *   GaLore's per-layer optimizer hooks.
 *
 * Dimension legend: B batch, T sequence, D hidden, V vocab.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { NamedParam } from "../models/linear.ts";
import { forwardOptionsOf, type MicroBatch } from "./batching.ts";
import { nllSum } from "./loss.ts";
import { withPhase } from "../engine/kernel_timer.ts";
import { envGet } from "../engine/permissions.ts";
import { withComputeDtype } from "../quant/compute_dtype.ts";
import { keepDequantizedForBackward, releaseKeptWeights } from "../quant/quantized_linear.ts";
import {
  blockBackward,
  blockForwardSaving,
  blockGradSupport,
  type BlockSaved,
  blockUsesDropout,
  disposeSaved,
} from "../models/llama_block_grad.ts";

/**
 * Whether every block of `model` can use the hand-written forward/backward
 * (`llama_block_grad.ts`), or the first reason why not. The trainer uses it when it can; the tape
 * otherwise. `NBTUNE_BACKWARD=tape` in the environment forces the tape (for comparisons).
 */
export function handWrittenBackward(model: LlamaForCausalLM): { ok: true } | { ok: false; reason: string } {
  if (envGet("NBTUNE_BACKWARD") === "tape") return { ok: false, reason: "NBTUNE_BACKWARD=tape" };
  for (const layer of model.layers) {
    const why = blockGradSupport(layer);
    if (why !== null) return { ok: false, reason: why };
  }
  return { ok: true };
}

/** Receives the gradients of one group of parameters (the caller disposes nothing: the grads are freed after the call). */
export type GradSink = (params: NamedParam[], grads: tf.Tensor[]) => void;

/** Splits a set of parameter names into the groups the backward pass produces, in backward order. */
export function parameterGroups(model: LlamaForCausalLM): { label: string; params: NamedParam[] }[] {
  const trainable = new Set(model.trainableParams().map((p) => p.variable));
  const keep = (ps: NamedParam[]) => ps.filter((p) => trainable.has(p.variable));
  const head = keep([...model.norm.trainableParams(), ...(model.lmHead?.trainableParams() ?? [])]);
  const embed = model.embedTrainable && trainable.has(model.embedTokens)
    ? [{ name: "model.embed_tokens.weight", variable: model.embedTokens }]
    : [];
  return [
    { label: "head", params: head },
    ...model.layers.map((l) => ({ label: `layer ${l.index}`, params: keep(l.trainableParams()) })).reverse(),
    { label: "embedding", params: embed },
  ];
}

/**
 * Runs forward and block-wise backward for one micro-batch; the loss is the
 * summed token loss divided by `divisor`. Returns that (scaled) loss. `onLoss` sees the
 * loss before any gradient reaches `sink` and may throw to stop the pass; so may `sink`
 * (everything the pass holds is freed either way).
 */
export function blockwiseBackward(
  model: LlamaForCausalLM,
  batch: MicroBatch,
  divisor: number,
  sink: GradSink,
  onLoss?: (loss: number) => void,
  /**
   * `"tape"`: recompute each block under the autodiff tape (gradient checkpointing with any block);
   * `"hand-written"`: the hand-written backward, keeping each block's saved tensors from the
   * forward (no recompute); `"hand-written-recompute"`: the hand-written backward after
   * recomputing the block's forward (checkpointing without the tape). The hand-written ones need
   * {@linkcode handWrittenBackward}.
   */
  how: "tape" | "hand-written" | "hand-written-recompute" = "tape",
): number {
  const engine = tf.engine();
  const groups = parameterGroups(model);
  const tied = model.lmHead === null;
  const ids = model.idsTensor(batch.ids);
  const [B, T] = ids.shape;
  const ctx = model.context(B, T, forwardOptionsOf(batch));
  const targets = tf.tensor1d(batch.targets, "int32");
  const weights = tf.tensor1d(batch.weights, "float32");
  const hs: tf.Tensor3D[] = [];
  const saved: (BlockSaved | undefined)[] = [];
  const seeds: BlockSaved["seeds"][] = []; // per block, the LoRA dropout seeds of its forward (recompute)
  let tiedEmbedGrad: tf.Tensor | undefined;
  try {
    // Forward, keeping block inputs (and, hand-written without recompute, what each backward needs).
    withPhase("forward", () => {
      hs.push(model.embed(ids));
      for (const layer of model.layers) {
        const h = hs[hs.length - 1];
        if (how === "hand-written") {
          const r = blockForwardSaving(layer, h, ctx);
          saved.push(r.saved);
          hs.push(r.out);
        } else if (how === "hand-written-recompute" && blockUsesDropout(layer)) {
          // The recompute must draw the same LoRA dropout masks: keep this forward's seeds only.
          const r = blockForwardSaving(layer, h, ctx);
          seeds[layer.index] = r.saved.seeds;
          disposeSaved(r.saved);
          hs.push(r.out);
        } else hs.push(tf.tidy(() => layer.forward(h, ctx)));
      }
    });

    // Head: final norm + LM head + loss.
    const headParams = groups[0].params;
    const embedTrainable = groups[groups.length - 1].params.length > 0;
    const headXs = [
      hs[hs.length - 1],
      ...headParams.map((p) => p.variable),
      ...(tied && embedTrainable ? [model.embedTokens] : []),
    ];
    const { value, grads } = withPhase("head + loss", () =>
      // The LM head's matmuls (logits and their input gradient) at the model's compute dtype.
      withComputeDtype(model.computeDtype, () =>
        engine.gradients(
          () => {
            const logits = model.head(hs[hs.length - 1]); // [B, T, V]
            const V = logits.shape[2];
            return tf.div(
              nllSum(tf.reshape(logits, [B * T, V]) as tf.Tensor2D, targets, weights),
              divisor,
            ) as tf.Scalar;
          },
          headXs,
          undefined,
          true,
        )));
    const loss = value.dataSync()[0];
    value.dispose();
    if (onLoss) {
      try {
        onLoss(loss); // the divergence guard may stop the step before any gradient reaches the sink
      } catch (e) {
        grads.forEach((g) => g.dispose());
        throw e;
      }
    }
    if (!Number.isFinite(loss)) {
      // Nothing reaches the sink, so no weight changes.
      grads.forEach((g) => g.dispose());
      return loss;
    }
    let dh = grads[0] as tf.Tensor3D;
    // A sink may throw (the divergence guard): free what this pass still holds, then rethrow.
    const give = (ps: NamedParam[], gs: tf.Tensor[]) => {
      try {
        sink(ps, gs);
      } catch (e) {
        tf.dispose([...gs, dh]);
        throw e;
      }
    };
    const headGrads = grads.slice(1, 1 + headParams.length);
    if (tied && embedTrainable) tiedEmbedGrad = grads[grads.length - 1];
    if (headParams.length) give(headParams, headGrads);
    headGrads.forEach((g) => g.dispose());

    // Blocks, last to first: recompute, differentiate, hand over, free.
    for (let i = model.layers.length - 1; i >= 0; i--) {
      const params = groups[model.layers.length - i].params;
      const layer = model.layers[i];
      const h = hs[i];
      let pg: tf.Tensor[];
      if (how === "tape") {
        const r = withPhase("blocks: recompute + backward", () =>
          engine.gradients(
            // The recompute keeps each dequantized base weight for the backward right after it.
            () => keepDequantizedForBackward(() => layer.forward(h, ctx)),
            [h, ...params.map((p) => p.variable)],
            dh,
            true,
          ));
        releaseKeptWeights();
        r.value.dispose();
        dh.dispose();
        hs[i + 1].dispose();
        dh = r.grads[0] as tf.Tensor3D;
        pg = r.grads.slice(1);
      } else {
        let s = saved[i];
        saved[i] = undefined;
        if (!s) {
          const r = withPhase("blocks: recompute", () => blockForwardSaving(layer, h, ctx, seeds[i]));
          r.out.dispose();
          s = r.saved;
        }
        const r = withPhase("blocks: backward", () => blockBackward(layer, s!, dh, ctx));
        dh.dispose();
        hs[i + 1].dispose();
        dh = r.dh;
        const missing = params.find((p) => !r.grads.has(p.variable));
        if (missing) {
          tf.dispose([...r.grads.values(), dh]);
          throw new Error(
            `hand-written backward of layer ${i}: no gradient for ${missing.name} (a bug: report it)`,
          );
        }
        pg = params.map((p) => r.grads.get(p.variable)!);
        for (const p of params) r.grads.delete(p.variable);
        tf.dispose([...r.grads.values()]); // gradients of tensors the trainer does not train
      }
      if (params.length) give(params, pg);
      pg.forEach((g) => g.dispose());
    }

    // Embedding lookup (plus the head's share when tied).
    const embedParams = groups[groups.length - 1].params;
    if (embedParams.length) {
      const r = engine.gradients(() => model.embed(ids), [model.embedTokens], dh, true);
      r.value.dispose();
      let g = r.grads[0];
      if (tiedEmbedGrad) {
        const s = tf.add(g, tiedEmbedGrad);
        g.dispose();
        g = s;
      }
      give(embedParams, [g]);
      g.dispose();
    }
    dh.dispose();
    return loss;
  } finally {
    releaseKeptWeights();
    for (const s of saved) if (s) disposeSaved(s);
    tiedEmbedGrad?.dispose();
    for (const h of hs) if (!h.isDisposed) h.dispose();
    ids.dispose();
    targets.dispose();
    weights.dispose();
    ctx.cos.dispose();
    ctx.sin.dispose();
    ctx.mask.dispose();
  }
}

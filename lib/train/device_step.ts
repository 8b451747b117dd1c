/**
 * One optimizer step for backends without synchronous reads (webgpu under Deno).
 *
 * The same step as `runStep`'s `"full"` mode (one tape per micro-batch, gradients summed,
 * global-norm clipping, the divergence guard), but every value the host needs is read
 * with `await tensor.data()` and batched: the summed loss and the squared gradient norm
 * come back in ONE wait per step; the guard adds one more (the weights after the update)
 * and, only when something is non-finite, one to name the first offending parameter.
 *
 * Optimizers: AdamW and Lion keep their states as device tensors. 8-bit AdamW keeps
 * them in host memory: its (clipped) gradients are brought to the host with one wait
 * before the update ({@linkcode prefetchToHost}, the documented host fallback). GaLore's
 * projector refreshes read their gradients mid-update and are refused here.
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import type { LlamaForCausalLM } from "../models/llama.ts";
import type { NamedParam } from "../models/linear.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import type { MicroBatch } from "./batching.ts";
import { microBatchLossSum } from "./loss.ts";
import { checkSaturated, DivergenceError, type StepGuard } from "./divergence.ts";
import type { StepResult } from "./step.ts";
import { prefetchToHost, readScalars } from "../engine/async_reads.ts";

/** Index of the first tensor holding NaN or ±Infinity, or -1 (one wait for all of them). */
export async function firstNonFiniteAsync(tensors: tf.Tensor[]): Promise<number> {
  if (tensors.length === 0) return -1;
  const flags = tensors.map((t) => tf.tidy(() => tf.all(tf.isFinite(t))));
  try {
    return (await readScalars(flags)).findIndex((ok) => !ok);
  } finally {
    tf.dispose(flags);
  }
}

/**
 * Throws a clear error when `optimizer` cannot run without synchronous reads (GaLore's
 * projector refreshes read gradients mid-update); `where` names the caller.
 *
 * @example
 * ```ts
 * import { checkDeviceOptimizer } from "./device_step.ts";
 * checkDeviceOptimizer("train()", "adamw8bit"); // host fallback: fine
 * let msg = "";
 * try { checkDeviceOptimizer("train()", "galore"); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("galore")) throw new Error("GaLore is refused by name");
 * ```
 */
export function checkDeviceOptimizer(where: string, name: string): void {
  if (name.startsWith("galore")) {
    throw new Error(
      `${where}: optimizer "${name}" reads gradients synchronously while refreshing its projectors, which the ` +
        `webgpu backend cannot do under Deno; use optimizer "adamw", "adamw8bit" or "lion" on webgpu, or ` +
        `initEngine({ backend: "wasm" }) for GaLore.`,
    );
  }
}

/**
 * Throws a clear error, before anything runs, when a `train()` run needs synchronous
 * reads: the block-wise modes (gradient checkpointing, layer-wise updates) read each
 * block's loss and norms mid-backward, and GaLore reads gradients in its projector refreshes.
 *
 * @example
 * ```ts
 * import { checkDeviceTraining } from "./device_step.ts";
 * checkDeviceTraining({ mode: "full", optimizer: "adamw" });
 * let msg = "";
 * try { checkDeviceTraining({ mode: "layerwise", optimizer: "adamw" }); } catch (e) { msg = (e as Error).message; }
 * if (!msg.includes("layerwise")) throw new Error("the mode is named");
 * ```
 */
export function checkDeviceTraining(o: { mode: string; optimizer: string }): void {
  const fix = 'on webgpu, or initEngine({ backend: "wasm" }) for it';
  if (o.mode !== "full") {
    throw new Error(
      `train(): mode "${o.mode}" (gradient checkpointing / layer-wise updates) reads each block's loss ` +
        `synchronously, which the webgpu backend cannot do under Deno; use mode "full" ` +
        `(gradientCheckpointing: false) ${fix}.`,
    );
  }
  checkDeviceOptimizer("train()", o.optimizer);
}

/**
 * Host fallback for saving a training state on webgpu: brings every tfjs variable (trainable
 * weights, optimizer moments, frozen dense weights) to the host with one wait, so that the save's
 * synchronous reads (`dataSync`) find them cached. The cached copies of weights that never change
 * stay in host memory afterwards (the embeddings and any other dense frozen weight).
 */
export async function prefetchVariables(): Promise<void> {
  await prefetchToHost(Object.values(tf.engine().registeredVariables));
}

/**
 * Forward, backward and update for one step with async reads only (see the module docs);
 * same result fields and errors as `runStep` in `"full"` mode. Tensors it makes are freed
 * (also when it throws); the parameters and optimizer states are updated in place.
 *
 * @example
 * ```ts
 * import { initEngine } from "../engine/backend.ts";
 * import { initModel } from "../models/init_model.ts";
 * import { createAdamW } from "../optim/adamw.ts";
 * import { makeMicroBatch } from "./batching.ts";
 * import { runDeviceStep } from "./device_step.ts";
 * await initEngine({ backend: "cpu" });
 * const model = initModel({ model_type: "llama", vocab_size: 8, hidden_size: 8, intermediate_size: 16,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 });
 * const opt = createAdamW();
 * const mb = makeMicroBatch([{ ids: [1, 2, 3, 4], labels: [1, 2, 3, 4] }], 0);
 * const r = await runDeviceStep(model, model.trainableParams(), [mb], opt, { lr: 1e-2, maxGradNorm: 1, label: "step 1" });
 * if (r.tokens !== 3 || !(r.loss > 0) || !(r.gradNorm > 0)) throw new Error(JSON.stringify(r));
 * opt.dispose(); model.dispose();
 * ```
 */
export async function runDeviceStep(
  model: LlamaForCausalLM,
  params: NamedParam[],
  micro: MicroBatch[],
  optimizer: Optimizer,
  options: { lr: number; maxGradNorm: number; label: string; guard?: StepGuard },
): Promise<StepResult> {
  const { lr, label, guard } = options;
  const total = micro.reduce((s, b) => s + b.numTargets, 0);
  if (total === 0) throw new RangeError(`${label}: the batch has no target tokens (all labels are -100?)`);
  if (params.length === 0) throw new RangeError(`${label}: no trainable parameters`);
  checkDeviceOptimizer(label, optimizer.name);
  const vars = params.map((p) => p.variable);
  // A scope instead of tf.tidy (which cannot span an await): everything made here is freed at the end.
  tf.engine().startScope();
  try {
    let grads: tf.Tensor[] | undefined;
    const losses: tf.Scalar[] = [];
    for (const mb of micro) {
      if (mb.numTargets === 0) continue;
      const { value, grads: g } = tf.variableGrads(
        () => tf.div(microBatchLossSum(model, mb), total) as tf.Scalar,
        vars,
      );
      losses.push(value);
      const list = vars.map((v) => g[v.name]);
      grads = grads ? grads.map((acc, j) => tf.add(acc, list[j])) : list;
    }
    const g = grads!;
    const gradientBytes = g.reduce((s, t) => s + t.size * 4, 0);
    const sumSq = tf.tidy(() => tf.addN(g.map((t) => tf.sum(tf.square(t)))));
    const [loss, sq] = await readScalars([tf.addN(losses), sumSq]); // the step's one wait
    const firstBad = async (ts: tf.Tensor[], names: NamedParam[]) => {
      const i = await firstNonFiniteAsync(ts);
      return i >= 0 ? names[i].name : undefined;
    };
    if (!Number.isFinite(loss)) {
      if (guard) {
        const parameter = await firstBad(vars, params);
        throw new DivergenceError({
          step: guard.step,
          parameter: parameter && `${parameter} (its value)`,
          lr,
          reason: `the loss is ${loss}`,
          weightsChanged: false,
        });
      }
      throw new RangeError(
        `${label}: loss is ${loss}; no weights were changed. Lower the learning rate or check the data.`,
      );
    }
    if (!Number.isFinite(sq)) {
      if (guard) {
        throw new DivergenceError({
          step: guard.step,
          parameter: await firstBad(g, params),
          lr,
          reason: "its gradient holds non-finite values",
          weightsChanged: false,
        });
      }
      throw new RangeError(
        `${label}: the gradient norm is ${Math.sqrt(sq)}; no weights were changed. ` +
          "Lower the learning rate or check the data.",
      );
    }
    guard?.checkLoss(loss);
    checkSaturated(guard, lr, sq, loss);
    const norm = Math.sqrt(sq);
    const maxNorm = options.maxGradNorm;
    // The same factor as clipByGlobalNorm (torch's).
    const clipped = maxNorm > 0 && Number.isFinite(maxNorm) && norm > maxNorm
      ? g.map((t) => tf.mul(t, maxNorm / (norm + 1e-6)))
      : g;
    if (optimizer.name.includes("8bit")) await prefetchToHost(clipped); // host-state fallback
    optimizer.step(params.map((p, i) => ({ name: p.name, variable: p.variable, grad: clipped[i] })), lr);
    if (guard) {
      const bad = await firstBad(vars, params);
      if (bad) {
        throw new DivergenceError({
          step: guard.step,
          parameter: bad,
          lr,
          reason: "the optimizer update itself made this weight non-finite (its gradients were finite)",
          weightsChanged: true,
        });
      }
    }
    return { loss, tokens: total, gradNorm: norm, gradientBytes };
  } finally {
    tf.engine().endScope();
  }
}

/**
 * Child process of `atomic_save_test.ts`: saves into one place in an endless loop,
 * alternating two saves that cannot be mixed unnoticed, until it is killed.
 * Usage: `deno run -A _save_child.ts adapter|checkpoint|quantize <dir> [<input checkpoint>]`.
 * Prints `saved <ms>` after each completed save.
 * @module
 */
import { initEngine } from "../../lib/engine/backend.ts";
import { initModel } from "../../lib/models/init_model.ts";
import { attachLoRA } from "../../lib/adapters/attach.ts";
import { saveAdapter } from "../../lib/adapters/peft_format.ts";
import { saveCheckpoint } from "../../lib/models/save_model.ts";
import { quantizeCheckpoint } from "../../lib/quant/quantize_checkpoint.ts";

/** The model both sides use: hidden 64, 2 layers (64-element quantization blocks). */
export const CHILD_CONFIG = {
  model_type: "llama",
  vocab_size: 96,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: false,
};

/** One save of `kind` number `i` (even and odd saves differ: r 4/8, F32/F16, nf4/fp4). */
export async function saveOnce(kind: string, dir: string, i: number, input?: string): Promise<void> {
  switch (kind) {
    case "adapter": {
      const m = initModel(CHILD_CONFIG, { seed: 1 });
      attachLoRA(m, { r: i % 2 ? 8 : 4, alpha: 8, targetModules: ["q_proj", "v_proj"] });
      await saveAdapter(m, dir);
      m.dispose();
      return;
    }
    case "checkpoint": {
      const m = initModel(CHILD_CONFIG, { seed: 2 });
      await saveCheckpoint(m, dir, { dtype: i % 2 ? "F16" : "F32" });
      m.dispose();
      return;
    }
    case "quantize":
      await quantizeCheckpoint(input!, dir, { overwrite: true, quantize: i % 2 ? "fp4" : "nf4" });
      return;
    default:
      throw new RangeError(`unknown kind ${kind}`);
  }
}

/** Options of the training run whose `saveEvery` saves the "state" kind kills. */
export const STATE_RUN = {
  steps: 100000,
  saveEvery: 1,
  saveTotalLimit: 2,
  lr: 1e-3,
  batchSize: 2,
  measureMemory: false,
};
/** Its data. */
export const STATE_DATA = Array.from({ length: 6 }, (_, i) => ({ ids: [1 + i, 2 + i, 3 + i, 4 + i, 5, 6] }));

if (import.meta.main) {
  await initEngine({ backend: "cpu" });
  const [kind, dir, input] = Deno.args;
  const enc = new TextEncoder();
  if (kind === "state") { // training with a save after every step (each into a new step-N, oldest pruned)
    const m = initModel(CHILD_CONFIG, { seed: 4 });
    attachLoRA(m, { r: 4, targetModules: ["q_proj", "v_proj"] });
    const { train } = await import("../../lib/train/trainer.ts"); // only this kind needs the trainer
    let t0 = performance.now();
    await train(m, STATE_DATA, {
      ...STATE_RUN,
      outputDir: dir,
      onStep: async () => {
        await Deno.stdout.write(enc.encode(`saved ${(performance.now() - t0).toFixed(2)}\n`));
        t0 = performance.now();
      },
    });
  }
  for (let i = 0;; i++) {
    const t0 = performance.now();
    await saveOnce(kind, dir, i, input);
    await Deno.stdout.write(enc.encode(`saved ${(performance.now() - t0).toFixed(2)}\n`));
  }
}

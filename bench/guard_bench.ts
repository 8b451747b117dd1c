/**
 * Cost of the divergence guard (issue 12), measured in one run:
 * - one-tape mode: the finite check over every trainable weight (run once per micro-batch
 *   on the gradients and once after the update) against the mean step time;
 * - layer-wise mode: `divergence.layerwiseCheck` "prepass" (a backward pass that checks
 *   everything before any block is updated) against "per-block" (no extra pass), with
 *   `layerwiseClip: "previous"` so no clipping pre-pass is shared.
 *
 * `deno run -A bench/guard_bench.ts` (about a minute; the model: hidden 256, 4 layers, vocab 512,
 * batch 4 × 64 tokens, wasm backend when available).
 * @module
 */
import { initEngine } from "../lib/engine/backend.ts";
import { initModel } from "../lib/models/init_model.ts";
import { train, type TrainOptions } from "../lib/train/trainer.ts";
import { firstNonFinite } from "../lib/train/divergence.ts";

await initEngine();
const CONFIG = {
  model_type: "llama",
  vocab_size: 512,
  hidden_size: 256,
  intermediate_size: 512,
  num_hidden_layers: 4,
  num_attention_heads: 8,
  num_key_value_heads: 4,
};
const DATA = Array.from({ length: 64 }, (_, i) => ({
  ids: Array.from({ length: 64 }, (_, t) => (i * 37 + t * 11) % 512),
}));

/** Mean seconds of steps 3..N (the first two warm up). */
async function stepSeconds(options: TrainOptions): Promise<number> {
  const m = initModel(CONFIG, { seed: 1 });
  const h = await train(m, DATA, { lr: 1e-3, batchSize: 4, steps: 10, measureMemory: false, ...options });
  m.dispose();
  const s = h.slice(2).map((r) => r.seconds);
  return s.reduce((a, b) => a + b, 0) / s.length;
}

const m = initModel(CONFIG, { seed: 1 });
const vars = m.trainableParams().map((p) => p.variable);
for (let k = 0; k < 3; k++) firstNonFinite(vars);
const t0 = performance.now();
for (let k = 0; k < 20; k++) firstNonFinite(vars);
const checkMs = (performance.now() - t0) / 20;
const params = vars.reduce((a, v) => a + v.size, 0);
m.dispose();
const fullMs = 1000 * await stepSeconds({ optimizer: "adamw" });
console.log(
  `one tape: finite check over ${params} weights ${checkMs.toFixed(1)} ms, run twice per step ` +
    `(${(200 * checkMs / fullMs).toFixed(1)}% of the ${fullMs.toFixed(0)} ms step)`,
);
const lw = (check: "prepass" | "per-block") =>
  stepSeconds({
    optimizer: "galore",
    galore: { r: 64, layerwise: true },
    layerwiseClip: "previous",
    divergence: { layerwiseCheck: check },
  } as TrainOptions);
const per: number[] = [], pre: number[] = [];
for (let i = 0; i < 3; i++) {
  per.push(await lw("per-block"));
  pre.push(await lw("prepass"));
}
const med = (xs: number[]) => xs.sort((a, b) => a - b)[1];
console.log(
  `layer-wise GaLore: per-block ${(1000 * med(per)).toFixed(0)} ms/step, prepass ${
    (1000 * med(pre)).toFixed(0)
  } ` +
    `ms/step (×${(med(pre) / med(per)).toFixed(2)}; medians of 3 runs)`,
);

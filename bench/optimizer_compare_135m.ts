/**
 * Issue 16: the optimizer comparison on the 135M-shaped checkpoint (`deno task make-checkpoint
 * smollm-135m`, random init), herald data, batch 4, lr 1e-3, 50 steps; GaLore rank 144 = hidden/4.
 * Run: `deno run -A bench/optimizer_compare_135m.ts [steps] [case indices, e.g. 0,2]` (prints markdown rows;
 * cases 0-2 by default, case 3 is layer-wise with the exact prepass norm).
 * @module
 */
import {
  EMBEDDED_DATA_DIR,
  EMBEDDED_MODEL_DIR,
  initEngine,
  loadModel,
  loadTokenizer,
  readJsonl,
  train,
} from "../mod.ts";
await initEngine();
const tokenizer = await loadTokenizer(EMBEDDED_MODEL_DIR);
const data = await readJsonl(`${EMBEDDED_DATA_DIR}/herald_train.jsonl`);
const evalData = (await readJsonl(`${EMBEDDED_DATA_DIR}/herald_eval.jsonl`)).slice(0, 16);
const steps = Number(Deno.args[0] ?? 50);
const G = { r: 144, updateProjGap: 10, scale: 2, residual: true };
const cases: [string, Record<string, unknown>][] = [
  ["AdamW (checkpointed)", { optimizer: "adamw", gradientCheckpointing: true }],
  ["GaLore 8-bit + residual (checkpointed)", {
    optimizer: "galore8bit",
    galore: G,
    gradientCheckpointing: true,
  }],
  ["GaLore 8-bit layer-wise + residual (previous)", {
    optimizer: "galore8bit",
    galore: { ...G, layerwise: true },
    layerwiseClip: "previous",
    divergence: { layerwiseCheck: "per-block" },
  }],
  ["GaLore 8-bit layer-wise + residual (prepass)", {
    optimizer: "galore8bit",
    galore: { ...G, layerwise: true },
    layerwiseClip: "prepass",
    divergence: { layerwiseCheck: "per-block" },
  }],
];
const only = Deno.args[1] ? Deno.args[1].split(",").map(Number) : [0, 1, 2];
for (const [i, [name, o]] of cases.entries()) {
  if (!only.includes(i)) continue;
  const model = await loadModel("out/checkpoints/smollm-135m");
  const h = await train(model, data, {
    tokenizer,
    steps,
    batchSize: 4,
    lr: 1e-3,
    warmupSteps: 3,
    evalData,
    shuffleSeed: 1,
    ...o,
    onStep: (r) => {
      if (r.step % 10 === 0 || r.step <= 2) {
        console.error(`${name} step ${r.step} loss ${r.loss.toFixed(3)} ${r.seconds.toFixed(1)}s`);
      }
    },
  });
  const sps = h.slice(1).reduce((s, r) => s + r.seconds, 0) / (h.length - 1);
  const peak = Math.max(...h.map((r) => r.memory.peakTensorBytes ?? 0));
  console.log(
    `| ${name} | ${h.at(-1)!.evalLoss!.toFixed(4)} | ${(peak / 2 ** 20).toFixed(0)} MiB | ${
      sps.toFixed(2)
    } s |`,
  );
  model.dispose();
}

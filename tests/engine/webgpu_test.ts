import { assert } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

// Runs in a subprocess so the webgpu backend never touches the test process's engine. The same
// runs on wasm then on webgpu (Mesa's lavapipe in CI): forward logits, a 5-step LoRA and a 5-step
// QLoRA (NF4 base) training history, the async evaluation, and the refusals that name their fix.
const SCRIPT = `
import * as tf from "@tensorflow/tfjs-core";
import {
  attachLoRA, EMBEDDED_MODEL_DIR, evaluateLossAsync, generateAsync, initEngine, loadModel, loadTokenizer, train,
} from "${ROOT}mod.ts";
const dir = "${ROOT}tests/fixtures/external/tiny-random-llama-2";
const data = [{ ids: [1, 5, 9, 13, 17, 21] }, { ids: [1, 4, 8, 15, 16, 23, 42] }, { ids: [1, 7, 7, 2] }];
const opts = { steps: 5, lr: 1e-2, batchSize: 2, shuffleSeed: false as const };
const out: Record<string, unknown> = {};
for (const backend of ["wasm", "webgpu"] as const) {
  const info = await initEngine({ backend });
  const m = await loadModel(dir);
  const logits = Array.from(await m.forward([[1, 42, 99]]).data());
  attachLoRA(m, { r: 4, alpha: 8, seed: 1 });
  const lora = (await train(m, data, opts)).map((r) => r.loss);
  const evalLoss = (await evaluateLossAsync(m, data.map((d) => ({ ids: d.ids, labels: d.ids })))).loss;
  let refused = "";
  try { await train(m, data, { ...opts, steps: 1, optimizer: "galore" }); } catch (e) { refused = (e as Error).message; }
  m.dispose();
  const q = await loadModel(dir, { quantize: "nf4" });
  attachLoRA(q, { r: 4, alpha: 8, seed: 1 });
  const qlora = (await train(q, data, { ...opts, optimizer: "adamw8bit" })).map((r) => r.loss);
  q.dispose();
  // Save every 2 steps, then resume from step 2 in a fresh model: the same history as uninterrupted.
  const saveDir = await Deno.makeTempDir({ prefix: "nbtune_webgpu_save_" });
  const run = async (extra: Record<string, unknown>) => {
    const r = await loadModel(dir);
    attachLoRA(r, { r: 4, alpha: 8, seed: 1 });
    const h = (await train(r, data, { ...opts, steps: 4, outputDir: saveDir, ...extra })).map((x) => x.loss);
    r.dispose();
    return h;
  };
  const whole = await run({ saveEvery: 2 });
  const resumed = await run({ resumeFrom: saveDir + "/step-2" });
  await Deno.remove(saveDir, { recursive: true });
  let tooBig = "";
  if (backend === "webgpu") {
    const l = info.adapter!.limits;
    const n = Math.min(l.maxBufferSize, l.maxStorageBufferBindingSize) / 4 + 1;
    try { tf.fill([n], 1); } catch (e) { tooBig = (e as Error).message; }
  }
  const e = await loadModel(EMBEDDED_MODEL_DIR);
  const text = await generateAsync(e, await loadTokenizer(EMBEDDED_MODEL_DIR), "ROMEO:\\n", { maxNewTokens: 6 });
  e.dispose();
  out[backend] = { backend: info.backend, adapter: info.adapter, text, whole, resumed, logits, lora, qlora, evalLoss, refused, tooBig };
}
console.log(JSON.stringify(out));
`;

function maxRel(got: number[], want: number[]): number {
  let err = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return err / den;
}

Deno.test({
  name:
    "webgpu (Mesa lavapipe here) agrees with wasm: logits, 5-step LoRA and QLoRA histories, async eval and generation, save + exact resume; adapter described, oversized buffers refused",
  ignore: !("gpu" in navigator),
  fn: async () => {
    const file = `${ROOT}out/_webgpu_check.ts`;
    await Deno.mkdir(`${ROOT}out`, { recursive: true });
    await Deno.writeTextFile(file, SCRIPT);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", file],
      stdout: "piped",
      stderr: "piped",
      env: { XDG_RUNTIME_DIR: "/tmp" },
    }).output();
    await Deno.remove(file);
    const text = new TextDecoder().decode(out.stdout);
    const line = text.trim().split("\n").at(-1) ?? "";
    if (!out.success || !line.startsWith("{")) {
      const err = new TextDecoder().decode(out.stderr);
      throw new Error(`subprocess failed: ${err.slice(-2000)}`);
    }
    const { wasm, webgpu } = JSON.parse(line);
    assert(wasm.backend === "wasm" && webgpu.backend === "webgpu", line.slice(0, 300));
    assert(
      wasm.adapter === undefined && typeof webgpu.adapter.name === "string",
      JSON.stringify(webgpu.adapter),
    );
    assert(webgpu.adapter.limits.maxStorageBufferBindingSize > 0 && webgpu.adapter.limits.maxBufferSize > 0);
    assert(
      webgpu.tooBig.includes("more than this adapter's") && webgpu.tooBig.includes('backend: "wasm"'),
      webgpu.tooBig,
    );
    assert(
      maxRel(webgpu.logits, wasm.logits) < 1e-4,
      `logits: relative error ${maxRel(webgpu.logits, wasm.logits)}`,
    );
    assert(wasm.lora.length === 5 && wasm.lora[4] < wasm.lora[0], `wasm LoRA learns: ${wasm.lora}`);
    for (const k of ["lora", "qlora"]) {
      for (let i = 0; i < 5; i++) {
        const d = Math.abs(webgpu[k][i] - wasm[k][i]) / Math.abs(wasm[k][i]);
        assert(d < 1e-3, `${k} step ${i + 1}: webgpu ${webgpu[k][i]} vs wasm ${wasm[k][i]}`);
      }
    }
    assert(
      Math.abs(webgpu.evalLoss - wasm.evalLoss) / wasm.evalLoss < 1e-4,
      `eval ${webgpu.evalLoss} vs ${wasm.evalLoss}`,
    );
    assert(
      // GPU reductions are not bit-deterministic run to run (lavapipe differs in the last ulp).
      webgpu.whole.length === 4 && maxRel(webgpu.resumed, webgpu.whole) < 1e-5,
      `webgpu resumed ${webgpu.resumed} vs uninterrupted ${webgpu.whole}`,
    );
    assert(maxRel(webgpu.whole, wasm.whole) < 1e-3, `save/resume run: ${webgpu.whole} vs ${wasm.whole}`);
    assert(
      wasm.text.length > 0 && webgpu.text === wasm.text,
      `generateAsync: ${webgpu.text} vs ${wasm.text}`,
    );
    assert(wasm.refused === "", `wasm runs GaLore: ${wasm.refused}`);
    assert(webgpu.refused.includes('"galore"') && webgpu.refused.includes('backend: "wasm"'), webgpu.refused);
  },
});

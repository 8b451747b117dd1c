import { assert } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

// Subprocess: the webgpu backend never touches the test process's engine.
const SCRIPT = `
import * as tf from "@tensorflow/tfjs-core";
import { initEngine, loadModel } from "${ROOT}mod.ts";
import { dequantize4bit, quantize4bit } from "${ROOT}lib/quant/blockwise_4bit.ts";
import { dequantize4bitOnDevice, deviceQuantBytes } from "${ROOT}lib/engine/webgpu_dequant.ts";
await initEngine({ backend: "webgpu" });
const cases = [];
for (const [type, blocksize, doubleQuant, shape] of [
  ["nf4", 64, true, [33, 97]], ["fp4", 128, false, [16, 64]], ["nf4", 256, false, [7, 5]],
]) {
  const n = shape[0] * shape[1];
  const q = quantize4bit(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7))), {
    quantize: { type, blocksize, doubleQuant }, shape,
  });
  const t = dequantize4bitOnDevice(q);
  const got = await t.data();
  t.dispose();
  const want = dequantize4bit(q);
  let mismatches = 0;
  for (let i = 0; i < n; i++) if (Object.is(got[i], want[i]) === false) mismatches++;
  cases.push({ type, shape, n: got.length, mismatches });
}
const before = deviceQuantBytes();
const m = await loadModel("${ROOT}tests/fixtures/external/tiny-random-llama-2", { quantize: "nf4" });
const ref = await loadModel("${ROOT}tests/fixtures/external/tiny-random-llama-2", { quantize: "nf4" });
const logits = await m.forward([[1, 42, 99]]).data();
const held = deviceQuantBytes() - before;
m.dispose();
const released = deviceQuantBytes() - before;
await initEngine({ backend: "wasm" });
const want = await ref.forward([[1, 42, 99]]).data();
let err = 0, den = 0;
for (let i = 0; i < want.length; i++) { err = Math.max(err, Math.abs(logits[i] - want[i])); den = Math.max(den, Math.abs(want[i])); }
ref.dispose();
console.log(JSON.stringify({ cases, held, released, rel: err / den }));
`;

Deno.test({
  name: "webgpu (lavapipe here): the WGSL NF4/FP4 dequantizer is bit-exact with the CPU one; a QLoRA model " +
    "keeps its 4-bit codes on the GPU, frees them on dispose, and its logits equal wasm's",
  ignore: !("gpu" in navigator),
  fn: async () => {
    const file = `${ROOT}out/_webgpu_dequant_check.ts`;
    await Deno.mkdir(`${ROOT}out`, { recursive: true });
    await Deno.writeTextFile(file, SCRIPT);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", file],
      stdout: "piped",
      stderr: "piped",
      env: { XDG_RUNTIME_DIR: "/tmp" },
    }).output();
    await Deno.remove(file);
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (!out.success || !line.startsWith("{")) {
      throw new Error(`subprocess failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    }
    const r = JSON.parse(line);
    for (const c of r.cases) {
      assert(c.n === c.shape[0] * c.shape[1] && c.mismatches === 0, JSON.stringify(c));
    }
    assert(r.held > 0, `no 4-bit weight was uploaded: ${line}`);
    assert(r.released === 0, `dispose left ${r.released} bytes of 4-bit weights on the GPU`);
    assert(r.rel < 1e-4, `QLoRA logits on webgpu vs wasm: relative error ${r.rel}`);
  },
});

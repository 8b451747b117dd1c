import { assert } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

// Runs in a subprocess so the webgpu backend never touches the test process's engine.
const SCRIPT = `
import * as tf from "@tensorflow/tfjs-core";
import { initEngine, loadModel, train } from "${ROOT}mod.ts";
const dir = "${ROOT}tests/fixtures/external/tiny-random-llama-2";
await initEngine({ backend: "wasm" });
const m1 = await loadModel(dir);
const want = await m1.forward([[1, 42, 99]]).data();
const info = await initEngine({ backend: "webgpu" });
const m2 = await loadModel(dir);
const got = await m2.forward([[1, 42, 99]]).data();
let err = 0, den = 0;
for (let i = 0; i < want.length; i++) { err = Math.max(err, Math.abs(got[i] - want[i])); den = Math.max(den, Math.abs(want[i])); }
let refused = "";
try { await train(m2, [{ ids: [1, 2, 3] }], { steps: 1 }); } catch (e) { refused = (e as Error).message; }
console.log(JSON.stringify({ backend: info.backend, rel: err / den, refused }));
`;

Deno.test({
  name:
    "the webgpu backend (Mesa lavapipe here) runs a forward equal to wasm, and train() refuses it clearly",
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
    const r = JSON.parse(line);
    assert(r.backend === "webgpu", line);
    assert(r.rel < 1e-4, `relative error ${r.rel}`);
    assert(r.refused.includes("synchronously") && r.refused.includes('backend: "wasm"'), r.refused);
  },
});

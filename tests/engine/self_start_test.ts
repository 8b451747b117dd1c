import { assert } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** Runs `code` in a fresh Deno process (no engine started yet) and returns its last stdout line. */
async function fresh(code: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`subprocess failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
  }
  return text.split("\n").at(-1) ?? "";
}

Deno.test("loadModel() starts the default engine by itself (no initEngine call)", async () => {
  const line = await fresh(`
    import { engineInfo, loadModel } from "${ROOT}mod.ts";
    const before = engineInfo();
    const m = await loadModel("${ROOT}tests/fixtures/external/tiny-random-llama-2");
    const y = m.forward([[1, 42, 99]]);
    console.log(JSON.stringify({ before: before ?? null, backend: engineInfo()?.backend, shape: y.shape }));
  `);
  const r = JSON.parse(line);
  assert(r.before === null, line);
  assert(r.backend === "wasm", line);
  assert(r.shape.join() === "1,3,3000", line);
});

Deno.test("initModel() before any engine says to await initEngine() (it is synchronous)", async () => {
  const line = await fresh(`
    import { initModel } from "${ROOT}mod.ts";
    try {
      initModel({ vocab_size: 16, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1,
        num_attention_heads: 2, num_key_value_heads: 1 });
      console.log("no error");
    } catch (e) { console.log((e as Error).message); }
  `);
  assert(line.startsWith("initModel() needs a running engine") && line.includes("await initEngine()"), line);
});

import { assert } from "../_assert.ts";

const MOD = new URL("../../mod.ts", import.meta.url).href;

Deno.test("code outside the repository (no deno.json, like a notebook elsewhere) can import mod.ts by file URL and train", async () => {
  const dir = await Deno.makeTempDir();
  const code = `
    const m = await import(${JSON.stringify(MOD)});
    await m.initEngine();
    const model = await m.loadModel(m.EMBEDDED_MODEL_DIR, { quantize: "nf4" });
    m.attachLoRA(model, { r: 2 });
    const h = await m.train(model, [{ ids: [0, 5, 6, 7] }], { steps: 1 });
    console.log("trained", h.length);
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  await Deno.remove(dir, { recursive: true });
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success && text.includes("trained 1"), text.slice(-3000));
});

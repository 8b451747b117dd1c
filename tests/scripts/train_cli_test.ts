import { assert, assertEquals } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("`deno task train <recipe>` fine-tunes the embedded model with a QLoRA recipe and saves a PEFT adapter", async () => {
  const dir = await Deno.makeTempDir();
  const recipe = `${dir}/r.yaml`;
  await Deno.writeTextFile(
    recipe,
    [
      `model: ${ROOT}notebooks/models/tiny-shakespeare-llama`,
      "quantize: nf4",
      `data: ${ROOT}notebooks/data/herald_train.jsonl`,
      `output: ${dir}/out`,
      "adapter: { type: lora, r: 4, alpha: 8 }",
      "train: { steps: 2, batchSize: 4, lr: 0.001 }",
    ].join("\n"),
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/train.ts`, recipe],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, text);
  assert(text.includes("done: 2 steps"), text);
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/out/adapter_config.json`));
  assertEquals([cfg.peft_type, cfg.r], ["LORA", 4]);
  const history = JSON.parse(await Deno.readTextFile(`${dir}/out/history.json`));
  assertEquals(history.length, 2);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("`deno task train --steps N --output DIR` overrides the recipe's steps and output", async () => {
  const dir = await Deno.makeTempDir();
  const recipe = `${dir}/r.yaml`;
  await Deno.writeTextFile(
    recipe,
    [
      `model: ${ROOT}notebooks/models/tiny-shakespeare-llama`,
      `data: ${ROOT}notebooks/data/herald_train.jsonl`,
      `output: ${dir}/recipe_out`,
      "adapter: { type: lora, r: 2 }",
      "train: { steps: 50, batchSize: 2, lr: 0.001 }",
    ].join("\n"),
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/train.ts`, recipe, "--steps", "2", "--output", `${dir}/cli_out`],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, text);
  assert(text.includes(`done: 2 steps`) && text.includes(`saved to ${dir}/cli_out`), text);
  assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/cli_out/history.json`)).length, 2);
  assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/cli_out/adapter_config.json`)).r, 2);
  assert(
    !(await Deno.stat(`${dir}/recipe_out`).then(() => true, () => false)),
    "the recipe's output was written",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("`deno task train --resume` continues a run saved with --save-every exactly as the uninterrupted run", async () => {
  const dir = await Deno.makeTempDir();
  const recipe = `${dir}/r.yaml`;
  await Deno.writeTextFile(
    recipe,
    [
      `model: ${ROOT}notebooks/models/tiny-shakespeare-llama`,
      `data: ${ROOT}notebooks/data/herald_train.jsonl`,
      "adapter: { type: lora, r: 2 }",
      "train: { steps: 4, batchSize: 2, lr: 0.001 }",
    ].join("\n"),
  );
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}scripts/train.ts`, recipe, ...args],
      stdout: "piped",
      stderr: "piped",
      env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, text };
  };
  const full = await run("--output", `${dir}/full`, "--save-every", "2");
  assertEquals(full.code, 0, full.text);
  const resumed = await run("--output", `${dir}/resumed`, "--resume", `${dir}/full/checkpoints/step-2`);
  assertEquals(resumed.code, 0, resumed.text);
  const losses = async (d: string) =>
    JSON.parse(await Deno.readTextFile(`${d}/history.json`)).map((h: { loss: number }) => h.loss);
  const expected = await losses(`${dir}/full`);
  assertEquals(expected.length, 4);
  assertEquals(await losses(`${dir}/resumed`), expected);
  assertEquals(
    await Deno.readFile(`${dir}/resumed/adapter_model.safetensors`),
    await Deno.readFile(`${dir}/full/adapter_model.safetensors`),
  );
  // A resume with another learning rate is refused in one line, in CLI terms.
  await Deno.writeTextFile(recipe, (await Deno.readTextFile(recipe)).replace("lr: 0.001", "lr: 0.002"));
  const other = await run("--output", `${dir}/other`, "--resume", `${dir}/full`);
  const lines = other.text.trim().split("\n");
  assertEquals(other.code, 1, other.text);
  assertEquals(
    lines.at(-1),
    `train: --resume ${dir}/full/checkpoints/step-4 was saved with lr = 0.001, this run has 0.002; ` +
      "resume with the same model, data and options",
  );
  await Deno.remove(dir, { recursive: true });
});

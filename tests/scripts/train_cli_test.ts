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

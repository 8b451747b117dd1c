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

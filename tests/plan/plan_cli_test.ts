import { runPlanCli } from "../../scripts/plan_cli.ts";
import { assert, assertThrows } from "./_assert.ts";

Deno.test("plan_cli prints the table and fitting suggestions for 7B in 24 GB", () => {
  const text = runPlanCli(["--model", "7B", "--budget", "24GB", "--seq", "512", "--batch", "1"]);
  assert(text.includes("llama-2-7b: 6.74B parameters"));
  assert(text.includes("Full fine-tuning (bf16)"));
  assert(/1\. .* fits llama-2-7b in 24\.0 GB/.test(text));
});

Deno.test("plan_cli rejects unknown flags and presets", () => {
  assertThrows(
    () => runPlanCli(["--modle", "7B"]),
    RangeError,
    "unknown option --modle (did you mean --model?)",
  );
  assertThrows(() => runPlanCli(["--budget", "24"]), RangeError, "--budget needs a unit: write 24GB");
  assertThrows(() => runPlanCli(["--model", "9B"]), RangeError, "unknown model preset");
});

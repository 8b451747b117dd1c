import { fitPlan, planLabel } from "../../lib/plan/fit_plan.ts";
import { planMemory } from "../../lib/plan/plan_memory.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";

Deno.test("fitPlan() finds a fitting change for full fine-tuning of 7B in 24 GB", () => {
  const s = fitPlan({ config: "7B", method: "full", microBatch: 2, gradAccumSteps: 8 }, "24GB");
  assert(s.length > 0);
  for (const x of s) {
    assert(x.plan.total <= 24e9);
    assertEquals(x.plan.spec.microBatch * x.plan.spec.gradAccumSteps, 16, "effective batch kept:");
  }
  assert(s[0].changes.length > 0);
});

Deno.test("fitPlan() puts the request first when it already fits", () => {
  const s = fitPlan({ config: "7B", method: "qlora", r: 16, gradientCheckpointing: true }, "24GB");
  assertEquals(s[0].changes.length, 0);
  assertEquals(
    s[0].sentence,
    `NF4 + LoRA r=16 + gradient checkpointing fits llama-2-7b in 24.0 GB with micro-batch 1 and accumulation 1 (${
      (s[0].plan.total / 1e9).toFixed(1)
    } GB).`,
  );
});

Deno.test("fitPlan() ranks by quality loss, then changes, then slowdown, deterministically", () => {
  const spec = { config: "7B", method: "lora" as const, r: 16, microBatch: 8, seqLen: 2048 };
  const a = fitPlan(spec, "16GB", { limit: 20 });
  const b = fitPlan(spec, "16GB", { limit: 20 });
  assertEquals(a.map((x) => x.sentence).join("\n"), b.map((x) => x.sentence).join("\n"));
  for (let i = 1; i < a.length; i++) {
    const p = a[i - 1], q = a[i];
    assert(
      p.qualityLoss < q.qualityLoss ||
        (p.qualityLoss === q.qualityLoss &&
          (p.changes.length < q.changes.length ||
            (p.changes.length === q.changes.length && p.slowdown <= q.slowdown))),
      `order broken at ${i}`,
    );
  }
});

Deno.test("fitPlan() returns nothing when nothing fits and rejects a negative budget", () => {
  assertEquals(fitPlan({ config: "70B", method: "full" }, "1GB").length, 0);
  assertThrows(() => fitPlan({ config: "7B", method: "full" }, -1), RangeError, ">= 0");
  assertThrows(() => fitPlan({ config: "7B", method: "full" }, "lots"), RangeError, "24GB");
  assertThrows(
    () => fitPlan({ config: "7B", method: "full" }, "24GB", { limt: 3 } as never),
    TypeError,
    "limt",
  );
});

Deno.test("planLabel() names the recipe", () => {
  assertEquals(
    planLabel(planMemory({ config: "7B", method: "full", optimizer: "adamw8bit" })),
    "Full fine-tuning (bf16) + 8-bit Adam",
  );
  assertEquals(
    planLabel(planMemory({ config: "40B", method: "qdylora", r: 64 })),
    "NF4 + DyLoRA r≤64",
  );
});

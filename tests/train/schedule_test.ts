import { assert, assertAlmostEquals, assertEquals } from "../_assert.ts";
import { learningRateAt, type ScheduleKind } from "../../lib/train/schedule.ts";

for (const schedule of ["cosine", "linear"] as ScheduleKind[]) {
  for (const [totalSteps, warmupSteps] of [[1, 0], [2, 0], [10, 0], [10, 3], [5, 5], [100, 10]]) {
    Deno.test(`${schedule}, ${totalSteps} steps, ${warmupSteps} warmup: every step trains, the peak follows warmup, the end comes after the last step`, () => {
      const o = { lr: 2, totalSteps, warmupSteps, schedule, minLrRatio: 0.1 };
      const lrs = Array.from({ length: totalSteps }, (_, i) => learningRateAt(i + 1, o));
      assert(lrs.every((v) => v > 0), `every step trains: ${lrs}`);
      assert(lrs.slice(warmupSteps).every((v) => v > 0.2), `every decay step above the final lr: ${lrs}`);
      for (let s = 1; s <= warmupSteps; s++) assertAlmostEquals(lrs[s - 1], 2 * s / (warmupSteps + 1), 1e-12);
      if (totalSteps > warmupSteps) assertEquals(lrs[warmupSteps], 2, "peak at the first step after warmup");
      for (let s = warmupSteps + 1; s < totalSteps; s++) {
        assert(lrs[s] < lrs[s - 1], `decreasing at ${s + 1}`);
      }
      if (totalSteps > warmupSteps) {
        assert(lrs[totalSteps - 1] > 0.2, "the last step still trains above the final value");
        assertAlmostEquals(
          learningRateAt(totalSteps + 1, o),
          0.2,
          1e-12,
          "final value one past the last step",
        );
      }
    });
  }
}

Deno.test("linear decay is evenly spaced from the peak to the final value one step after the last", () => {
  const o = { lr: 1, totalSteps: 4, schedule: "linear" as const };
  assertEquals([1, 2, 3, 4, 5].map((s) => learningRateAt(s, o)), [1, 0.75, 0.5, 0.25, 0]);
});

Deno.test("constant keeps the peak after warmup", () => {
  const o = { lr: 1, totalSteps: 5, warmupSteps: 1, schedule: "constant" as const };
  assertEquals([1, 2, 3, 4, 5].map((s) => learningRateAt(s, o)), [0.5, 1, 1, 1, 1]);
});

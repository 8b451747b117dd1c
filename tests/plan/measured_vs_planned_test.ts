/**
 * The engine estimate against the trainer's own measurement: the embedded model, 8 herald
 * examples in one micro-batch of 8, 2 steps, for full fine-tuning, LoRA, QLoRA and GaLore
 * (and the block-wise modes) — the cases and the measurement are `bench/plan_validation.ts`'s.
 * The prediction must be within 1% of step 2's `peakTensorBytes` and of its `activations`
 * part; the other breakdown parts must be exact, and no tensor may be left untracked.
 * @module
 */
import { assert, assertEquals } from "../_assert.ts";
import { measurePlanCases, planValidationMarkdown } from "../../bench/plan_validation.ts";

Deno.test("the engine estimate is within 1% of the measured peak for every method", async (t) => {
  const results = await measurePlanCases();
  console.log(planValidationMarkdown(results));
  for (const r of results) {
    await t.step(r.name, () => {
      assertEquals(r.untracked, 0, `${r.name}: tensors alive after loading that belong to no owner`);
      const err = Math.abs(r.predicted / r.measured - 1);
      assert(err < 0.01, `${r.name}: predicted ${r.predicted} B, measured ${r.measured} B`);
      const actErr = Math.abs(r.predictedActivations / r.measuredActivations - 1);
      assert(actErr < 0.01, `${r.name}: activations ${r.predictedActivations} vs ${r.measuredActivations}`);
      for (const k of ["weights", "hostOffloaded", "adapters", "gradients", "optimizerStates"] as const) {
        assertEquals(r.predictedBreakdown[k], r.measuredBreakdown[k], `${r.name}: ${k}`);
      }
      assertEquals(r.planForModelTotal, r.predicted, `${r.name}: planForModel total`);
    });
  }
});

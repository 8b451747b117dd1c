import { DEVICE_PARTS, formatPlanTable, planChartSpec, planTable } from "../../lib/plan/plan_table.ts";
import { planMemory } from "../../lib/plan/plan_memory.ts";
import { assert, assertEquals, assertNear } from "./_assert.ts";

const SEED = { params: 10e9, adapterParams: 0.1e9, accounting: "qlora-seed" } as const;
const plans = (["full", "lora", "qlora"] as const).map((method) => planMemory({ ...SEED, method }));

Deno.test("planTable() gives the seed's totals in GB and whether each fits", () => {
  const rows = planTable(plans, { budget: "48GB" });
  assertEquals(rows.map((r) => r.total.toFixed(1)).join(","), "160.0,41.6,11.6");
  assertEquals(rows.map((r) => r.fits).join(","), "false,true,true");
  for (const r of rows) assertNear(DEVICE_PARTS.reduce((s, k) => s + r[k], 0), r.total, 1e-9);
});

Deno.test("formatPlanTable() prints a header and one aligned line per plan", () => {
  const lines = formatPlanTable(planTable(plans)).split("\n");
  assertEquals(lines.length, 4);
  assert(lines[0].includes("optimizerStates") && !lines[0].includes("fits"));
  assert(lines[1].includes("160.00") && lines[3].includes("11.60"));
});

Deno.test("planChartSpec() stacks one trace per device part with a budget line", () => {
  const fig = planChartSpec(plans, { budget: 24e9 });
  assertEquals(fig.data.length, DEVICE_PARTS.length);
  assertEquals((fig.data[0].x as string[]).length, 3);
  assertEquals(fig.layout.barmode, "stack");
  assertEquals((fig.layout.shapes as { y0: number }[])[0].y0, 24);
  JSON.stringify(fig); // plain JSON
});

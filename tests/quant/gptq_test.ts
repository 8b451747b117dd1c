import { dequantizeGptq, type GptqFormat, packGptq } from "../../lib/quant/gptq.ts";
import { assertEquals, assertSameBits, assertThrows, f32s, i32s, loadFixture } from "./_fixture.ts";

/** One case of tests/fixtures/quant/gptq_cases.json (written by tests/reference/gptq_ref.py). */
interface GptqCase {
  name: string;
  outFeatures: number;
  inFeatures: number;
  groupSize: number;
  sym: boolean;
  format: GptqFormat;
  actOrder: boolean;
  /** Key into the fixture's shared `weights` ([O, I] float32). */
  weight: string;
  qweight: string;
  qzeros: string;
  scales: string;
  gIdx: string;
  dequant: string;
}
const FIXTURE = loadFixture<{ weights: Record<string, string>; cases: GptqCase[] }>("gptq_cases.json");

for (const c of FIXTURE.cases) {
  Deno.test(`dequantizeGptq() matches the numpy reference bit for bit on ${c.name}`, () => {
    const layer = {
      inFeatures: c.inFeatures,
      outFeatures: c.outFeatures,
      qweight: i32s(c.qweight),
      qzeros: i32s(c.qzeros),
      scales: f32s(c.scales),
      gIdx: i32s(c.gIdx),
    };
    assertSameBits(dequantizeGptq(layer, { format: c.format }), f32s(c.dequant), "dequantized [O, I]");
  });

  Deno.test(`packGptq() reproduces the reference qweight, qzeros and scales on ${c.name}`, () => {
    const packed = packGptq(f32s(FIXTURE.weights[c.weight]), [c.outFeatures, c.inFeatures], {
      groupSize: c.groupSize,
      sym: c.sym,
      format: c.format,
      gIdx: c.actOrder ? i32s(c.gIdx) : undefined,
    });
    assertSameBits(packed.qweight, i32s(c.qweight), "qweight");
    assertSameBits(packed.qzeros, i32s(c.qzeros), "qzeros");
    assertSameBits(packed.scales, f32s(c.scales), "scales");
    assertSameBits(packed.gIdx, i32s(c.gIdx), "gIdx");
  });
}

Deno.test("dequantizeGptq() reads v1 zeros as stored + 1 and v2 zeros as stored", () => {
  const base = {
    inFeatures: 8,
    outFeatures: 8,
    qweight: new Int32Array(8), // all codes 0
    scales: new Float32Array(8).fill(1),
    gIdx: new Int32Array(8),
  };
  const stored15 = { ...base, qzeros: new Int32Array([0xffffffff | 0]) };
  assertEquals(dequantizeGptq(stored15, { format: "gptq" })[0], 0); // (15 + 1) & 15 = 0
  assertEquals(dequantizeGptq(stored15, { format: "gptq_v2" })[0], -15);
});

Deno.test("dequantizeGptq() rejects other bit widths, bad g_idx and wrong lengths with clear errors", () => {
  const layer = packGptq(new Float32Array(64).fill(0.1), [8, 8], { groupSize: -1 });
  assertThrows(
    () => dequantizeGptq(layer, { bits: 3 }),
    RangeError,
    'dequantizeGptq: option "bits" must be one of 4, received 3',
  );
  assertThrows(
    () => dequantizeGptq({ ...layer, gIdx: new Int32Array(8).fill(1) }),
    RangeError,
    "gIdx[0] = 1",
  );
  assertThrows(() => dequantizeGptq({ ...layer, qweight: new Int32Array(7) }), TypeError, "qweight");
  assertThrows(() => dequantizeGptq(layer, { format: "marlin" as never }), RangeError, "gptq_v2");
  assertThrows(() => packGptq(new Float32Array(60), [6, 10]), RangeError, "multiples of 8");
});

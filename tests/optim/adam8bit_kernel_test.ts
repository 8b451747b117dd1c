/**
 * The blockwise 8-bit kernels (`quantize8`, `dequantize8`, the fused `adam8bit` step of
 * lib/engine/native.ts, native and TypeScript) against the reference they replaced in the 8-bit
 * moments: `_dynamic_map.ts`'s quantize8/dequantize8 plus the fp32 Adam update, bit for bit.
 * @module
 */
import { assert } from "./_assert.ts";
import {
  type Adam8bitMaps,
  type NativeKernels,
  nativeKernels,
  typescriptKernels,
} from "../../lib/engine/native.ts";
import { mulberry32 } from "../../lib/engine/random.ts";
import {
  blockCount,
  codeThresholds,
  dequantize8,
  dynamicMap,
  quantize8,
  type Quantized8,
} from "../../lib/optim/_dynamic_map.ts";

const native = nativeKernels();
const nativeWhy = native.kind === "native" ? false : `native kernels not built: ${native.source}`;

const SIGNED = dynamicMap(true), UNSIGNED = dynamicMap(false);
const MAPS: Adam8bitMaps = {
  signed: SIGNED,
  unsigned: UNSIGNED,
  signedTh: codeThresholds(SIGNED),
  unsignedTh: codeThresholds(UNSIGNED),
};

/** Throws naming the first element where two arrays differ (bitwise for floats: NaN = NaN, 0 ≠ −0). */
function sameBits(a: Float32Array | Uint8Array, b: Float32Array | Uint8Array, what: string): void {
  assert(a.length === b.length, `${what}: lengths ${a.length} vs ${b.length}`);
  const ua = a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a;
  const ub = b instanceof Float32Array ? new Uint32Array(b.buffer, b.byteOffset, b.length) : b;
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) throw new Error(`${what}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

/**
 * Test data of `n` elements, `[rows, row]` when `row` is given: normal values of mixed scales,
 * exact zeros (a whole block of them too), values exactly on code midpoints (ties), tiny values
 * (subnormal after scaling) and one value per block at ±absmax.
 */
function testData(n: number, seed: number, th: Float32Array, signed: boolean): Float32Array {
  const rand = mulberry32(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rand();
    const sign = signed && rand() < 0.5 ? -1 : 1;
    if (r < 0.1) x[i] = 0;
    else if (r < 0.25) x[i] = sign * th[Math.floor(rand() * th.length)]; // a tie when the block's absmax is 1
    else if (r < 0.3) x[i] = sign * 1e-40 * rand();
    else x[i] = sign * rand() * 10 ** (-8 * rand());
  }
  // Make the absmax of every 64-element run exactly 1, so the midpoint values above are exact ties.
  for (let i = 0; i < n; i += 64) x[i] = signed && i % 128 === 0 ? -1 : 1;
  x.fill(0, Math.min(n, 256), Math.min(n, 512)); // an all-zero block (absmax 0)
  return x;
}

/** [N, blocksize, rowLength?] cases: odd sizes, one-element blocks, row layouts with uneven runs. */
const CASES: [number, number, number | undefined][] = [
  [1, 256, undefined],
  [255, 256, undefined],
  [1000, 256, undefined],
  [4097, 64, undefined],
  [3 * 344, 256, 344],
  [7 * 1000, 256, 1000],
  [5 * 100, 256, 100], // rows shorter than a block: one block per row
  [2 * 513, 1, 513],
  [1 << 12, 256, 1 << 12], // rowLength = N: plain layout
  [7300 * 576, 256, 576], // above the 4M-element threshold: the multi-threaded native path
];

function checkQuantize(k: NativeKernels): void {
  for (const [n, bs, row] of CASES) {
    for (const signed of [true, false]) {
      const code = signed ? SIGNED : UNSIGNED, th = signed ? MAPS.signedTh : MAPS.unsignedTh;
      const x = testData(n, n + (signed ? 1 : 2), th, signed);
      const nb = blockCount(n, bs, row);
      const ref: Quantized8 = { codes: new Uint8Array(n), absmax: new Float32Array(nb) };
      quantize8(x, th, bs, ref, undefined, row);
      const codes = new Uint8Array(n), absmax = new Float32Array(nb);
      k.quantize8(x, th, codes, absmax, bs, row);
      const what = `${k.kind} quantize8 n=${n} bs=${bs} row=${row} ${signed ? "signed" : "unsigned"}`;
      sameBits(codes, ref.codes, `${what} codes`);
      sameBits(absmax, ref.absmax, `${what} absmax`);
      const a = new Float32Array(n), b = new Float32Array(n);
      dequantize8(ref, code, bs, b, row);
      k.dequantize8(codes, absmax, code, a, bs, row);
      sameBits(a, b, `${k.kind} dequantize8 n=${n} bs=${bs} row=${row}`);
    }
  }
}

/** The 8-bit moments' step before the fused kernel (dequantize, fp32 Adam update, requantize). */
function referenceStep(
  g: Float32Array,
  m: Quantized8,
  v: Quantized8,
  t: number,
  bs: number,
  row: number | undefined,
): Float32Array {
  const beta1 = 0.9, beta2 = 0.999, eps = 1e-8, n = g.length;
  const mf = new Float32Array(n), vf = new Float32Array(n), dir = new Float32Array(n);
  dequantize8(m, SIGNED, bs, mf, row);
  dequantize8(v, UNSIGNED, bs, vf, row);
  const bc1 = 1 - Math.pow(beta1, t), sbc2 = Math.sqrt(1 - Math.pow(beta2, t));
  for (let i = 0; i < n; i++) {
    const gi = g[i];
    mf[i] = beta1 * mf[i] + (1 - beta1) * gi;
    vf[i] = beta2 * vf[i] + (1 - beta2) * gi * gi;
    dir[i] = mf[i] / bc1 / (Math.sqrt(vf[i]) / sbc2 + eps);
  }
  quantize8(mf, MAPS.signedTh, bs, m, undefined, row);
  quantize8(vf, MAPS.unsignedTh, bs, v, undefined, row);
  return dir;
}

function checkAdam(k: NativeKernels): void {
  for (const [n, bs, row] of CASES) {
    const nb = blockCount(n, bs, row);
    const fresh = (): Quantized8 => ({ codes: new Uint8Array(n), absmax: new Float32Array(nb) });
    const rm = fresh(), rv = fresh(), km = fresh(), kv = fresh();
    for (let t = 1; t <= 3; t++) {
      const g = testData(n, 100 * t + n, MAPS.signedTh, true);
      if (t === 2) g.fill(0, 0, Math.min(n, 600)); // zero gradients: m decays, v decays
      for (let i = 0; i < n; i += 97) g[i] *= 1e3; // outliers of another scale
      const ref = referenceStep(g, rm, rv, t, bs, row);
      const dir = new Float32Array(n);
      const bc1 = 1 - Math.pow(0.9, t), sbc2 = Math.sqrt(1 - Math.pow(0.999, t));
      k.adam8bit(g, km, kv, MAPS, dir, {
        beta1: 0.9,
        beta2: 0.999,
        bc1,
        sbc2,
        eps: 1e-8,
        blocksize: bs,
        rowLength: row,
      });
      const what = `${k.kind} adam8bit n=${n} bs=${bs} row=${row} step ${t}`;
      sameBits(dir, ref, `${what} direction`);
      sameBits(km.codes, rm.codes, `${what} m codes`);
      sameBits(km.absmax, rm.absmax, `${what} m absmax`);
      sameBits(kv.codes, rv.codes, `${what} v codes`);
      sameBits(kv.absmax, rv.absmax, `${what} v absmax`);
    }
  }
}

Deno.test("TypeScript 8-bit quantize/dequantize kernels equal _dynamic_map's bit for bit (ties, zeros, rows)", () => {
  checkQuantize(typescriptKernels);
});

Deno.test({
  name: "native 8-bit quantize/dequantize kernels equal _dynamic_map's bit for bit (ties, zeros, rows)",
  ignore: nativeWhy !== false,
  fn: () => checkQuantize(native),
});

Deno.test("TypeScript fused 8-bit Adam step equals dequantize → fp32 update → requantize bit for bit", () => {
  checkAdam(typescriptKernels);
});

Deno.test({
  name: "native fused 8-bit Adam step equals dequantize → fp32 update → requantize bit for bit",
  ignore: nativeWhy !== false,
  fn: () => checkAdam(native),
});

Deno.test("8-bit kernels refuse arrays that do not match the block layout, naming the array", () => {
  for (const k of native.kind === "native" ? [native, typescriptKernels] : [typescriptKernels]) {
    let msg = "";
    try {
      k.quantize8(new Float32Array(1000), MAPS.signedTh, new Uint8Array(1000), new Float32Array(3), 256);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(/absmax has 3 elements, expected 4/.test(msg), `${k.kind}: ${msg}`);
    msg = "";
    try {
      k.dequantize8(new Uint8Array(1000), new Float32Array(4), SIGNED, new Float32Array(1000), 256, 300);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(/not rows of 300/.test(msg), `${k.kind}: ${msg}`);
  }
});

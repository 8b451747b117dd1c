import { assert, assertEquals } from "../_assert.ts";
import { nativeKernels, typescriptKernels } from "../../lib/engine/native.ts";
import { mulberry32 } from "../../lib/train/random.ts";

const native = nativeKernels();
const why = native.kind === "native" ? false : `native kernels not built: ${native.source}`;

Deno.test({
  name: "native 4-bit dequantization equals the TypeScript kernel bit for bit (odd sizes, all blocksizes)",
  ignore: why !== false,
  fn() {
    const rand = mulberry32(5);
    const qmap = Float32Array.from({ length: 16 }, () => rand() * 2 - 1);
    // The last size is above the 4M-element threshold, so the multi-threaded path runs too.
    for (
      const [n, bs] of [[1, 64], [63, 32], [64, 64], [1001, 128], [4096 * 3 + 17, 4096], [(1 << 22) + 65, 64]]
    ) {
      const packed = Uint8Array.from({ length: Math.ceil(n / 2) }, () => Math.floor(rand() * 256));
      const absmax = Float32Array.from({ length: Math.ceil(n / bs) }, () => rand() * 3);
      const a = new Float32Array(n), b = new Float32Array(n);
      native.dequant4bit(packed, absmax, qmap, a, bs);
      typescriptKernels.dequant4bit(packed, absmax, qmap, b, bs);
      assertEquals(a, b, `n=${n} blocksize=${bs}`);
    }
  },
});

Deno.test({
  name: "native cross-entropy matches the TypeScript kernel (loss and gradient)",
  ignore: why !== false,
  fn() {
    const rand = mulberry32(9);
    // 4100 x 1024 logits: above the 4M-element threshold, so the multi-threaded path runs.
    const rows = 4100, vocab = 1024;
    const z = Float32Array.from({ length: rows * vocab }, () => (rand() - 0.5) * 20);
    const y = Int32Array.from({ length: rows }, () => Math.floor(rand() * vocab));
    const w = Float32Array.from({ length: rows }, (_, i) => (i % 5 === 0 ? 0 : 1));
    const la = new Float32Array(rows), lb = new Float32Array(rows);
    const ga = new Float32Array(rows * vocab), gb = new Float32Array(rows * vocab);
    native.crossEntropy(z, y, w, vocab, 0.25, la, ga);
    typescriptKernels.crossEntropy(z, y, w, vocab, 0.25, lb, gb);
    for (let i = 0; i < rows; i++) {
      assert(Math.abs(la[i] - lb[i]) <= 1e-5 * (1 + Math.abs(lb[i])), `row ${i}`);
    }
    let worst = 0;
    for (let i = 0; i < ga.length; i++) worst = Math.max(worst, Math.abs(ga[i] - gb[i]));
    assert(worst < 1e-7, `gradient differs by ${worst}`);
    // Rows with weight 0 contribute nothing.
    assertEquals(la[0], 0);
    assertEquals(ga.subarray(0, vocab).every((v) => v === 0), true);
    // Without a gradient buffer only the losses are written.
    const lc = new Float32Array(rows);
    native.crossEntropy(z, y, w, vocab, 1, lc, null);
    assertEquals(lc, la);
  },
});

Deno.test("TypeScript cross-entropy: uniform logits give ln V per counted row, gradient sums to zero", () => {
  const vocab = 4,
    z = new Float32Array(2 * vocab),
    loss = new Float32Array(2),
    grad = new Float32Array(2 * vocab);
  typescriptKernels.crossEntropy(z, new Int32Array([1, 3]), new Float32Array([1, 2]), vocab, 1, loss, grad);
  assert(Math.abs(loss[0] - Math.log(4)) < 1e-6 && Math.abs(loss[1] - 2 * Math.log(4)) < 1e-6, `${loss}`);
  assert(Math.abs(grad[1] - (0.25 - 1)) < 1e-7 && Math.abs(grad[7] - 2 * (0.25 - 1)) < 1e-7, `${grad}`);
  assert(Math.abs(grad.reduce((a, b) => a + b, 0)) < 1e-6);
});

Deno.test("without the compiled library everything runs on the TypeScript kernels and says so once", async () => {
  const code = `
    import { nativeKernels } from "${new URL("../../lib/engine/native.ts", import.meta.url).href}";
    import { dequantize4bit, quantize4bit } from "${
    new URL("../../lib/quant/blockwise_4bit.ts", import.meta.url).href
  }";
    const q = quantize4bit(Float32Array.from({ length: 100 }, (_, i) => Math.cos(i)));
    const a = dequantize4bit(q), b = dequantize4bit(q);
    console.log(JSON.stringify({ kind: nativeKernels().kind, same: a.join() === b.join(), v: a[3] }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    env: { NBTUNE_NATIVE_LIB: "/nonexistent/libnbtune_kernels.so" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, stderr);
  const r = JSON.parse(new TextDecoder().decode(out.stdout).trim());
  assertEquals([r.kind, r.same], ["typescript", true]);
  assert(Math.abs(r.v - Math.cos(3)) < 0.1, `dequantized ${r.v}`);
  assertEquals(stderr.match(/native kernels unavailable/g)?.length, 1, stderr);
  assert(/scripts\/setup\.sh/.test(stderr), stderr);
});

/**
 * The 8-bit Adam state update (`Moments8bit.direction`: dequantize m and v, update, requantize,
 * blocks of 256) on a tensor the size of SmolLM-135M's tied embedding (49152 × 576 = 28.3M
 * elements), with the native kernel and with the TypeScript fallback (`NBTUNE_NATIVE=off` in a
 * subprocess). No assertions; prints the seconds per call (median of `--reps`, default 3).
 *
 * `deno run -A bench/adam8bit_bench.ts [--reps N] [--elements N]`
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initEngine } from "../lib/engine/backend.ts";
import { nativeKernels } from "../lib/engine/native.ts";
import { Moments8bit } from "../lib/optim/_moments_8bit.ts";

const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const reps = arg("--reps", 3), elements = arg("--elements", 49152 * 576);
const child = Deno.env.get("NBTUNE_ADAM8BIT_BENCH_CHILD") === "1";

await initEngine({ backend: "cpu" });
const g = tf.randomNormal([elements], 0, 1e-3, "float32", 7);
const moments = new Moments8bit({ beta1: 0.9, beta2: 0.999, eps: 1e-8 }, 256, 4096);
const times: number[] = [];
for (let t = 1; t <= reps + 1; t++) {
  const t0 = performance.now();
  const d = moments.direction("embed", g, t);
  const s = (performance.now() - t0) / 1000;
  if (t > 1) times.push(s); // the first call also allocates the state
  d.dispose();
}
g.dispose();
const median = times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
const line = `${nativeKernels().kind}: ${
  median.toFixed(3)
} s per call (${elements} elements, median of ${reps})`;
if (child) {
  console.log(line);
} else {
  console.log(line);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...Deno.args],
    env: { NBTUNE_NATIVE: "off", NBTUNE_ADAM8BIT_BENCH_CHILD: "1" },
    stderr: "null",
  }).output();
  console.log(new TextDecoder().decode(out.stdout).trim());
}

import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertThrows } from "../_assert.ts";
import { initEngine } from "../../lib/engine/backend.ts";
import { profiling, startKernelProfile, timedSpan, withPhase } from "../../lib/engine/kernel_timer.ts";

await initEngine({ backend: "wasm" });

Deno.test("kernel profile: times kernels per phase, records spans, and puts the kernels back", () => {
  const before = tf.getKernel("BatchMatMul", "wasm")!.kernelFunc;
  const p = startKernelProfile();
  assert(profiling());
  assertThrows(() => startKernelProfile(), Error, "already running");
  withPhase("forward", () => {
    tf.tidy(() => {
      const y = tf.softmax(tf.matMul(tf.ones([8, 8]), tf.ones([8, 8])));
      timedSpan("dequantize", () => y.dataSync());
    });
  });
  const r = p.stop();
  assert(!profiling());
  assertEquals(tf.getKernel("BatchMatMul", "wasm")!.kernelFunc, before);
  const mm = r.kernels.find((k) => k.name === "BatchMatMul [< 10 MFLOP]")!;
  assertEquals([mm.phase, mm.calls], ["forward", 1]);
  assert(r.kernels.some((k) => k.name === "Softmax" && k.phase === "forward"));
  assertEquals(r.spans.map((s) => [s.name, s.phase, s.calls]), [["dequantize", "forward", 1]]);
  assert(r.phases.forward > 0 && r.wallMs >= r.phases.forward);
  assertThrows(() => p.stop(), Error, "not running");
});

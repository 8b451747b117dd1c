import * as tf from "@tensorflow/tfjs-core";
import { engineInfo, initEngine } from "../../lib/engine/backend.ts";
import { loadBlas } from "../../lib/engine/blas.ts";
import { matmulKernelMode } from "../../lib/engine/matmul_kernels.ts";
import { assert, assertEquals } from "./_helpers.ts";

Deno.test("initEngine() defaults to wasm with BLAS when the library loads, and caches the result", async () => {
  const info = await initEngine();
  assertEquals(info.backend, "wasm");
  assertEquals(info.blas, loadBlas() !== null);
  assertEquals(matmulKernelMode(), info.blas ? "blas" : "explicit-transpose");
  assert(tf.getKernel("UnsortedSegmentSum", "wasm") !== undefined);
  assert((await initEngine()) === info && engineInfo() === info);
});

Deno.test("initEngine() switches backends when another one is asked for", async () => {
  const cpu = await initEngine({ backend: "cpu" });
  assertEquals([cpu.backend, tf.getBackend()], ["cpu", "cpu"]);
  const wasm = await initEngine({ backend: "wasm" });
  assertEquals([wasm.backend, tf.getBackend()], ["wasm", "wasm"]);
});

Deno.test("backend 'tensorflow' without tfjs-node fails with a message saying what to install", async () => {
  let message = "";
  try {
    await initEngine({ backend: "tensorflow" });
  } catch (e) {
    message = (e as Error).message;
  }
  assert(/tfjs-node/.test(message) && /install/.test(message), message);
  await initEngine({ backend: "wasm" });
});

Deno.test("initEngine() rejects unknown options and backends", async () => {
  let e: unknown;
  try {
    await initEngine({ backnd: "cpu" } as never);
  } catch (err) {
    e = err;
  }
  assert(e instanceof TypeError);
  try {
    await initEngine({ backend: "gpu" as never });
  } catch (err) {
    e = err;
  }
  assert(e instanceof RangeError);
});

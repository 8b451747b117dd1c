import { loadBlas } from "../../lib/engine/blas.ts";
import { assert, maxAbsDiff, randomValues } from "./_helpers.ts";

Deno.test({
  name: "loadBlas() returns the same handle each time and sgemm matches a JS reference",
  ignore: loadBlas() === null, // reason: no OpenBLAS on this machine (scripts/setup.sh installs it)
}, () => {
  const blas = loadBlas()!;
  assert(loadBlas() === blas);
  const [M, N, K] = [3, 17, 5];
  const a = randomValues(M * K, 1), b = randomValues(K * N, 2);
  const c = new Float32Array(M * N), want = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) for (let k = 0; k < K; k++) want[i * N + j] += a[i * K + k] * b[k * N + j];
  }
  blas.sgemm(false, false, M, N, K, 1, a, K, b, N, 0, c, N);
  assert(maxAbsDiff(c, want) < 1e-5);
});

Deno.test("NBTUNE_BLAS=off disables BLAS in a fresh process", async () => {
  const code = `import { loadBlas } from "${new URL("../../lib/engine/blas.ts", import.meta.url).href}";
    console.log(loadBlas() === null ? "null" : "loaded");`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { NBTUNE_BLAS: "off" },
    stdout: "piped",
  }).output();
  assert(new TextDecoder().decode(out.stdout).trim() === "null");
});

Deno.test("loadBlas() rejects unknown options and bad thread counts", () => {
  let e: unknown;
  try {
    loadBlas({ thread: 2 } as never);
  } catch (err) {
    e = err;
  }
  assert(e instanceof TypeError);
  if (loadBlas()) {
    try {
      loadBlas({ threads: 0 });
      e = undefined;
    } catch (err) {
      e = err;
    }
    assert(e instanceof RangeError);
  }
});

import { assert } from "../_assert.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test({
  name:
    "deno task bench:gpu runs its smoke version on the adapter present (lavapipe in CI): tokens/s and GPU memory",
  ignore: !("gpu" in navigator),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbtune_gpu_bench_" });
    try {
      const args = ["task", "-q", "bench:gpu", "--dir", `${ROOT}tests/fixtures/external/tiny-random-llama-2`];
      const r = await new Deno.Command(Deno.execPath(), {
        args: [...args, "--steps", "1", "--seq", "8", "--r", "4", "--out", `${dir}/gpu.json`],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
        env: { XDG_RUNTIME_DIR: "/tmp" },
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert(r.success, `bench:gpu failed: ${err.slice(-2000)}`);
      const { results } = JSON.parse(await Deno.readTextFile(`${dir}/gpu.json`));
      const g = results[0];
      assert(results.length === 1 && g.steps === 1 && g.losses.length === 2, JSON.stringify(results));
      assert(g.tokensPerSecond > 0 && Number.isFinite(g.losses[1]), JSON.stringify(g));
      assert(g.gpuBytesInUse > 0 && g.fourBitBytes > 0 && typeof g.adapter === "string", JSON.stringify(g));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

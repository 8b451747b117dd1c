import { FIXTURE_DIR } from "./_fixture.ts";

// Re-runs the numpy reference scripts and checks they reproduce the committed fixtures byte for byte.
const PYTHON = "/usr/bin/python3";

async function hasNumpy(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PYTHON, {
      args: ["-c", "import numpy"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

const available = await hasNumpy();
if (!available) console.warn(`skipping reference_scripts_test: ${PYTHON} with numpy is not available`);

for (const [script, fixture] of [["quant_ref.py", "bnb_cases.json"], ["gptq_ref.py", "gptq_cases.json"]]) {
  Deno.test({
    name: `tests/reference/${script} regenerates tests/fixtures/quant/${fixture} identically`,
    ignore: !available,
    fn: async () => {
      const dir = await Deno.makeTempDir();
      try {
        const path = new URL(`../reference/${script}`, import.meta.url).pathname;
        const run = await new Deno.Command(PYTHON, { args: [path, dir], stderr: "piped" }).output();
        if (!run.success) throw new Error(`${script} failed: ${new TextDecoder().decode(run.stderr)}`);
        const fresh = await Deno.readTextFile(`${dir}/${fixture}`);
        const stored = await Deno.readTextFile(new URL(fixture, FIXTURE_DIR));
        if (fresh !== stored) {
          throw new Error(`${script} output differs from the stored ${fixture}; regenerate and review`);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

/**
 * The drift check of `scripts/run_notebooks.py --drift-only`: a committed notebook passes, and a copy
 * whose code cell was edited after its outputs were produced fails, naming the cell.
 */
import { assert, assertEquals } from "../_assert.ts";

function assertStringIncludes(text: string, part: string): void {
  assert(text.includes(part), `expected ${JSON.stringify(part)} in:\n${text}`);
}

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("../../scripts/run_notebooks.py", import.meta.url).pathname;
const NOTEBOOK = new URL("../../notebooks/00-display-check.ipynb", import.meta.url).pathname;

async function driftCheck(path: string): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command(PYTHON, {
    args: [SCRIPT, "--drift-only", path],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, text: decode(out.stdout) + decode(out.stderr) };
}

Deno.test("drift check: the committed 00-display-check passes", async () => {
  const { code, text } = await driftCheck(NOTEBOOK);
  assertEquals(code, 0, text);
  assertStringIncludes(text, "ok   ");
});

Deno.test("drift check: a code cell edited after its outputs were produced fails", async () => {
  const nb = JSON.parse(await Deno.readTextFile(NOTEBOOK));
  const index = nb.cells.findIndex((c: { cell_type: string }) => c.cell_type === "code");
  assert(index >= 0, "00-display-check has no code cell");
  const source = nb.cells[index].source;
  nb.cells[index].source = [
    ...(Array.isArray(source) ? source : [source]),
    "\n// edited without re-running\n",
  ];
  const dir = await Deno.makeTempDir({ prefix: "nbtune-drift-" });
  try {
    const copy = `${dir}/edited.ipynb`;
    await Deno.writeTextFile(copy, JSON.stringify(nb));
    const { code, text } = await driftCheck(copy);
    assertEquals(code, 1, text);
    assertStringIncludes(
      text,
      `cell ${index}: drift: the code differs from what produced its committed outputs`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

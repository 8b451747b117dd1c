import { assert, assertEquals, assertRejects, captureLog, withFakeJupyter } from "./_assert.ts";
import { display, isJupyter, JUPYTER_DISPLAY, richObject, toBundle } from "../../lib/notebook/display.ts";

Deno.test("isJupyter() is false outside a kernel and true when Deno.jupyter is present", async () => {
  assertEquals(isJupyter(), false);
  let inside = false;
  await withFakeJupyter(() => inside = isJupyter());
  assert(inside);
  assertEquals(isJupyter(), false);
});

Deno.test("display() prints only the text/plain part outside Jupyter", async () => {
  const printed = await captureLog(() => display({ "text/plain": "3 steps", "text/html": "<b>3</b>" }));
  assertEquals(printed, ["3 steps"]);
});

Deno.test("display() sends the raw bundle with display_id and update inside a kernel", async () => {
  const bundle = { "text/plain": "a", "text/html": "<i>a</i>" };
  const calls = await withFakeJupyter(async () => {
    await display(bundle, { id: "x" });
    await display(richObject(bundle), { id: "x", update: true });
  });
  assertEquals(calls.map((c) => c.options), [
    { raw: true, update: false, display_id: "x" },
    { raw: true, update: true, display_id: "x" },
  ]);
  assertEquals(calls[1].bundle, bundle);
});

Deno.test("display() rejects unknown options and update without an id", async () => {
  // deno-lint-ignore no-explicit-any
  const bad: any = { displayId: "x" };
  await assertRejects(() => display({ "text/plain": "" }, bad), TypeError, "displayId");
  await assertRejects(() => display({ "text/plain": "" }, { update: true }), TypeError, "needs an id");
});

Deno.test("richObject() renders its bundle for the kernel and prints as text", () => {
  let builds = 0;
  const shown = richObject(() => (builds++, { "text/plain": "lazy", "text/html": "<p>lazy</p>" }));
  assertEquals(builds, 0);
  assertEquals(shown[JUPYTER_DISPLAY]()["text/html"], "<p>lazy</p>");
  assertEquals(Deno.inspect(shown), "lazy");
  assertEquals(toBundle(shown)["text/plain"], "lazy");
  assertEquals(builds, 1);
});

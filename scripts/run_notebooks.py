#!/usr/bin/python3
"""Execute notebooks headlessly with the Deno kernel and check their outputs (CI runner).

Usage (`deno task notebooks --help` lists every option with its default and an example):
  /usr/bin/python3 scripts/run_notebooks.py [--check] [--drift-only] [--kernel nbtune] [--timeout 600]
                                            [--grace 0.25] [--out out/notebooks] [--verbose] NOTEBOOK_OR_DIR...

Each notebook runs with its own folder as the working directory (so the kernel finds deno.json by
walking up), and the executed copy is written to OUT/<name>.ipynb. Without --check (`deno task notebooks`)
a notebook that passed is also written back over its source, ready to commit: every Plotly output gets a
static `image/png` beside its interactive bundle (rendered by plotly.js's toImage in headless Chromium, so
static viewers such as code hosts show the chart), the embedded plotly.js (4.8 MB) is replaced by a
`<script src>` of the same version on cdn.plot.ly, and each code cell records the SHA-256 of the source that
produced its outputs (metadata nbtune.source_sha256). With --check (CI) nothing is written back, and a
notebook also fails when a committed code cell's source differs from the one its outputs came from (the
drift check; --drift-only runs just that, without a kernel). Exit status 1 when any notebook:
  * has an error output (an uncaught exception in a cell) or the kernel dies / times out;
  * has a code cell that should produce output but has none ("empty output");
  * has a live training chart (lib/notebook/live_chart.ts) whose stored figure is not its final
    update, or whose loss trace does not hold every step it recorded;
  * (--check, --drift-only) has a code cell whose source is not the one its committed outputs came from.

Which cells "should produce output" (robust for TypeScript, where most lines end with `;`):
  * metadata {"nbtune": {"expect_output": true|false}} on the cell decides when present;
  * otherwise a cell expects output when its last code line does not end with `;` or `}` and does
    not start a declaration (import/export/const/let/var/function/class/interface/type/enum).
    A bare last expression such as `table(rows)` therefore must render something; a cell that
    only displays via `await display(x);` should carry expect_output: true to be checked.

Why a custom client: the Deno kernel (2.9) sometimes reports `status: idle` before the cell's last
iopub messages; stock nbclient stops listening at idle and silently drops them. This client keeps
listening for a short grace period after idle (see shared RUNTIME.md §1).
"""

import argparse
import asyncio
import difflib
import os
import re
import sys
import time

# nbformat and nbclient are imported when notebooks run, so --help and usage errors work without them.

DECLARATION = re.compile(
    r"^(import|export|const|let|var|function|async\s+function|class|interface|type|enum|declare)\b"
)


def deno_notebook_client():
    """nbclient's NotebookClient that keeps reading iopub for `grace` seconds after the cell's idle status."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionComplete
    from nbclient.util import ensure_async

    class DenoNotebookClient(NotebookClient):
        grace = 0.25

        async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
            idle_seen = False
            while True:
                try:
                    msg = await asyncio.wait_for(
                        ensure_async(self.kc.iopub_channel.get_msg(timeout=None)),
                        timeout=self.grace if idle_seen else None,
                    )
                except asyncio.TimeoutError:
                    return
                if msg["parent_header"].get("msg_id") != parent_msg_id:
                    continue
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    idle_seen = True

    return DenoNotebookClient


def last_code_line(source):
    """The last line that is not blank and not a // comment (block comments are rare at cell ends)."""
    for line in reversed(source.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("//"):
            return stripped
    return ""


def expects_output(cell):
    flag = cell.get("metadata", {}).get("nbtune", {}).get("expect_output")
    if isinstance(flag, bool):
        return flag
    line = last_code_line(cell.source)
    if not line or line.endswith(";") or line.endswith("}"):
        return False
    # A declaration's last line (e.g. `const x = f(a,\n  b)`) is checked through its first line.
    statement_start = last_statement_start(cell.source)
    return not DECLARATION.match(statement_start)


def last_statement_start(source):
    """First line of the last top-level statement: after the last line ending in `;` or `}`."""
    lines = [l.strip() for l in source.splitlines() if l.strip() and not l.strip().startswith("//")]
    start = 0
    for i, line in enumerate(lines[:-1]):
        if line.endswith(";") or line.endswith("}"):
            start = i + 1
    return lines[start] if lines else ""


def live_chart_problems(nb):
    """Live charts mark their figure with layout.meta.nbtune = {live, steps, finished}."""
    problems, seen = [], {}
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            fig = output.get("data", {}).get("application/vnd.plotly.v1+json")
            meta = (fig or {}).get("layout", {}).get("meta", {})
            info = meta.get("nbtune") if isinstance(meta, dict) else None
            if not isinstance(info, dict) or "live" not in info:
                continue
            live = info["live"]
            seen[live] = seen.get(live, 0) + 1
            loss = next((t for t in fig.get("data", []) if t.get("name") == "loss"), {})
            points = len(loss.get("x", []))
            if not info.get("finished"):
                problems.append(f"cell {index}: live chart {live} lacks its final update (finish() output lost?)")
            elif points != info.get("steps"):
                problems.append(f"cell {index}: live chart {live} shows {points} of {info.get('steps')} steps")
    for live, count in seen.items():
        if count != 1:
            problems.append(f"live chart {live} appears in {count} outputs; expected exactly one")
    return problems


def check(nb):
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        for output in outputs:
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
        if expects_output(cell) and not outputs:
            first = last_code_line(cell.source)[:60]
            problems.append(f"cell {index}: no output (last line `{first}`); the output was lost or the "
                            'cell needs metadata {"nbtune": {"expect_output": false}}')
    return problems + live_chart_problems(nb)


def collect(paths):
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith(".ipynb") and not f.endswith(".out.ipynb"))
        else:
            found.append(path)
    return found


def run_one(path, args):
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    drift = drift_problems(nb) if args.check else []
    client = deno_notebook_client()(
        nb,
        kernel_name=args.kernel,
        timeout=args.timeout,
        allow_errors=True,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
    )
    client.grace = args.grace
    started = time.time()
    problems = []
    try:
        client.execute()
    except (CellTimeoutError, DeadKernelError) as error:
        problems.append(f"{type(error).__name__}: {str(error).strip().splitlines()[0]}")
    except Exception as error:  # kernel missing, bad notebook: report and keep going
        problems.append(f"{type(error).__name__}: {error}")
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, os.path.basename(path))
    nbformat.write(nb, target)
    problems += check(nb)
    if not args.check and not problems:
        try:
            nbformat.write(prepare_for_commit(nb), path)
            target = f"{target} and {path}"
        except Exception as error:
            problems.append(f"writing back: {type(error).__name__}: {error}")
    return drift + problems, target, time.time() - started


def source_hash(source):
    import hashlib

    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def drift_problems(nb):
    """Code cells whose source differs from the one that produced the committed outputs."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        stamp = cell.get("metadata", {}).get("nbtune", {}).get("source_sha256")
        first = last_code_line(cell.source)[:50]
        if stamp is None:
            problems.append(f"cell {index}: drift: no recorded source hash (`{first}`); "
                            "run `deno task notebooks <notebook>` and commit the result")
        elif stamp != source_hash(cell.source):
            problems.append(f"cell {index}: drift: the code differs from what produced its committed outputs "
                            f"(`{first}`); run `deno task notebooks <notebook>` and commit the result")
    return problems


PLOTLY_LIB = re.compile(r'<script type="text/javascript" data-nbtune-plotly="([^"]+)">.*?</script>', re.S)
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def plotly_js_path():
    import glob

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = sorted(glob.glob(f"{root}/node_modules/.deno/plotly.js-dist-min@*/node_modules/plotly.js-dist-min/plotly.min.js"))
    if not found:
        raise RuntimeError("plotly.min.js not found under node_modules/.deno (run scripts/setup.sh)")
    return os.path.abspath(found[-1])


def static_pngs(figures, chromium=None, budget_ms=60000):
    """PNG (base64) of each Plotly figure, drawn by plotly.js's toImage in one headless Chromium page."""
    import json
    import subprocess
    import tempfile

    if not figures:
        return []
    chromium = chromium or os.environ.get("CHROMIUM", "chromium")
    sized = []
    for fig in figures:
        layout = dict(fig.get("layout") or {})
        width, height = int(layout.get("width") or 760), int(layout.get("height") or 440)
        sized.append({"data": fig.get("data", []), "layout": layout, "w": width, "h": height})
    figures_json = json.dumps(sized).replace("</", "<\\/")
    page = f"""<!doctype html><html><body><pre id="nbtune-pngs">pending</pre>
<script src="file://{plotly_js_path()}"></script>
<script>
(async () => {{
  const figs = {figures_json};
  const out = [];
  for (const f of figs) {{
    try {{
      const url = await Plotly.toImage({{ data: f.data, layout: f.layout }}, {{ format: "png", width: f.w, height: f.h }});
      out.push(url.slice(url.indexOf(",") + 1));
    }} catch (e) {{ out.push("ERROR " + e); }}
  }}
  document.getElementById("nbtune-pngs").textContent = JSON.stringify(out);
}})();
</script></body></html>"""
    with tempfile.TemporaryDirectory(prefix="nbtune-png-") as tmp:
        path = os.path.join(tmp, "figures.html")
        with open(path, "w") as f:
            f.write(page)
        run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", f"--user-data-dir={tmp}/profile",
                              f"--virtual-time-budget={budget_ms}", "--dump-dom", "file://" + path],
                             capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="nbtune-pngs">(.*?)</pre>', run.stdout, re.S)
    if run.returncode != 0 or not found or found.group(1) == "pending":
        raise RuntimeError(f"chromium did not render the static images: {run.stderr.strip()[-500:]}")
    images = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    bad = [i for i in images if i.startswith("ERROR")]
    if bad:
        raise RuntimeError(f"plotly.js toImage failed: {bad[0]}")
    return images


def prepare_for_commit(nb):
    """Static PNG beside every Plotly output, plotly.js from its CDN, source hashes; drops run timestamps."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if PLOTLY_MIME in o.get("data", {})]
    for output, png in zip(outputs, static_pngs([o["data"][PLOTLY_MIME] for o in outputs])):
        output["data"]["image/png"] = png
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.metadata.setdefault("nbtune", {})["source_sha256"] = source_hash(cell.source)
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html")
            if isinstance(html, str) and "data-nbtune-plotly" in html:
                output["data"]["text/html"] = PLOTLY_LIB.sub(
                    lambda m: f'<script src="https://cdn.plot.ly/plotly-{m.group(1)}.min.js" '
                    f'data-nbtune-plotly="{m.group(1)}"></script>', html)
    return nb


NAME = "notebooks"  # the deno task; errors are one line "notebooks: ..."


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) that suggest the closest option."""

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown and unknown.group(1).startswith("-"):
            flags = [f for a in self._actions for f in a.option_strings if f.startswith("--")]
            close = difflib.get_close_matches(unknown.group(1), flags, n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (see --help)"
            message = f"unknown option {unknown.group(1)}{hint}"
        print(f"{NAME}: {message}", file=sys.stderr)
        sys.exit(2)


def positive(kind):
    def read(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs a {'whole ' if kind is int else ''}number, got {text!r}")
        if value < 0 or (kind is int and value == 0):
            raise argparse.ArgumentTypeError(f"must be {'> 0' if kind is int else '>= 0'}, got {text}")
        return value

    return read


def parse_args(argv):
    parser = Parser(
        prog="deno task notebooks",
        description="Executes notebooks headlessly with the Deno kernel and checks their outputs (error "
        "outputs, missing outputs, incomplete live charts); writes the executed copies to --out and, unless "
        "--check, writes passing notebooks back (static PNG fallbacks, source hashes) for committing. "
        "Exit codes: 0 all passed, 1 a notebook failed, 2 bad usage.",
        epilog="examples:\n  deno task notebooks notebooks/\n"
        "  deno task notebooks --check notebooks/\n"
        "  deno task notebooks --drift-only notebooks/\n"
        "  deno task notebooks --kernel nbtune --timeout 300 notebooks/01-quickstart.ipynb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("notebooks", nargs="+", help="notebook files or folders (example: notebooks/)")
    parser.add_argument("--kernel", default="nbtune",
                        help="kernelspec name (default: nbtune; example: --kernel nbtune-dev)")
    parser.add_argument("--timeout", type=positive(int), default=600,
                        help="seconds per cell (default: 600; example: --timeout 300)")
    parser.add_argument("--grace", type=positive(float), default=0.25,
                        help="seconds to listen after idle (default: 0.25; example: --grace 1)")
    parser.add_argument("--out", default="out/notebooks",
                        help="folder for executed copies (default: out/notebooks; example: --out out/nb)")
    parser.add_argument("--check", action="store_true",
                        help="CI mode: write nothing back; also fail when committed code differs from what "
                        "produced its outputs (default: off, write passing notebooks back; example: --check)")
    parser.add_argument("--drift-only", action="store_true",
                        help="only the drift check, no kernel (default: off; example: --drift-only)")
    parser.add_argument("--verbose", action="store_true",
                        help="on failure, print the traceback too (default: off; example: --verbose)")
    # Unknown options first (argparse would complain about missing notebooks before a mistyped flag).
    known = {f for a in parser._actions for f in a.option_strings}
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1 and arg.split("=", 1)[0] not in known:
            parser.error(f"unrecognized arguments: {arg.split('=', 1)[0]}")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_all(args)
    except Exception as error:  # one line, unless --verbose
        if args.verbose:
            import traceback

            traceback.print_exc()
        text = " ".join(str(error).split())
        print(f"{NAME}: {type(error).__name__}: {text}", file=sys.stderr)
        return 1


def run_all(args):
    paths = collect(args.notebooks)
    if not paths:
        print(f"{NAME}: no notebooks found in {' '.join(args.notebooks)}", file=sys.stderr)
        return 1
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        print(f"{NAME}: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 1
    failed = 0
    if args.drift_only:
        import nbformat

        for path in paths:
            problems = drift_problems(nbformat.read(path, as_version=4))
            print(f"{'FAIL' if problems else 'ok':4} {path} (drift check)")
            for problem in problems:
                print(f"     {problem}")
            failed += bool(problems)
        print(f"{len(paths) - failed} passed, {failed} failed")
        return 1 if failed else 0
    for path in paths:
        problems, target, seconds = run_one(path, args)
        status = "FAIL" if problems else "ok"
        print(f"{status:4} {path} -> {target} ({seconds:.1f} s)")
        for problem in problems:
            print(f"     {problem}")
        failed += bool(problems)
    print(f"{len(paths) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Execute notebooks headlessly with the Deno kernel and check their outputs (CI runner).

Usage:
  /usr/bin/python3 scripts/run_notebooks.py [--kernel nbtune] [--timeout 600] [--grace 0.25]
                                            [--out out/notebooks] NOTEBOOK_OR_DIR...

Each notebook runs with its own folder as the working directory (so the kernel finds deno.json by
walking up), and the executed copy is written to OUT/<name>.ipynb. Exit status 1 when any notebook:
  * has an error output (an uncaught exception in a cell) or the kernel dies / times out;
  * has a code cell that should produce output but has none ("empty output");
  * has a live training chart (lib/notebook/live_chart.ts) whose stored figure is not its final
    update, or whose loss trace does not hold every step it recorded.

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
import json
import os
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async

DECLARATION = re.compile(
    r"^(import|export|const|let|var|function|async\s+function|class|interface|type|enum|declare)\b"
)


class DenoNotebookClient(NotebookClient):
    """nbclient that keeps reading iopub for `grace` seconds after the cell's idle status."""

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
    nb = nbformat.read(path, as_version=4)
    client = DenoNotebookClient(
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
    return problems + check(nb), target, time.time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help="notebook files or folders")
    parser.add_argument("--kernel", default="nbtune", help="kernelspec name (default: nbtune)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: 600)")
    parser.add_argument("--grace", type=float, default=0.25, help="seconds to listen after idle (default: 0.25)")
    parser.add_argument("--out", default="out/notebooks", help="folder for executed copies (default: out/notebooks)")
    args = parser.parse_args()
    paths = collect(args.notebooks)
    if not paths:
        print("run_notebooks: no notebooks found", file=sys.stderr)
        return 1
    failed = 0
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

#!/usr/bin/python3
"""Execute notebooks headlessly with the Deno kernel and check their outputs (CI runner).

Usage (`deno task notebooks --help` lists every option with its default and an example):
  /usr/bin/python3 scripts/run_notebooks.py [--kernel nbtune] [--timeout 600] [--grace 0.25]
                                            [--out out/notebooks] [--verbose] NOTEBOOK_OR_DIR...

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
    return problems + check(nb), target, time.time() - started


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
        "outputs, missing outputs, incomplete live charts); writes the executed copies to --out. "
        "Exit codes: 0 all passed, 1 a notebook failed, 2 bad usage.",
        epilog="examples:\n  deno task notebooks notebooks/\n"
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

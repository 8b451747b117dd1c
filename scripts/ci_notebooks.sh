#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the Deno kernel and checks one in a browser (CI).
#
#  1. installs the "nbtune" kernelspec into out/jupyter (a Jupyter data dir selected with JUPYTER_PATH);
#  2. runs notebooks/*.ipynb with scripts/run_notebooks.py (grace-period client; fails on error outputs,
#     missing outputs and incomplete live charts), executed copies in out/notebooks/; with --check, so it
#     writes nothing back and fails when a committed notebook's code differs from what produced its
#     committed outputs (the drift check; `deno task notebooks` re-executes and writes them back);
#  3. exports every executed notebook to HTML and checks in headless Chromium that every Plotly chart
#     drew and that no legend overlaps an axis title or tick label or is clipped (element boxes;
#     scripts/check_notebook_html.ts); HTML and screenshots in out/notebooks/html/.
# Prints a summary with the time of each notebook; exits non-zero when any step fails.
#
# Usage: bash scripts/ci_notebooks.sh [NOTEBOOK...]   (default: every notebook in notebooks/)
# Needs: .tools/node_modules/.bin/deno (scripts/setup.sh), /usr/bin/python3 with nbclient and nbformat,
#        jupyter nbconvert and chromium (or $CHROMIUM) on the PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PATH="$ROOT/.tools/node_modules/.bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" PYDEVD_DISABLE_FILE_VALIDATION=1 NO_COLOR=1
OUT="$ROOT/out/notebooks"
HTML_OUT="$OUT/html"
PYTHON="${PYTHON:-/usr/bin/python3}"

started=$(date +%s)
status=0
summary=()

# 1. kernelspec
if ! deno run -A scripts/install_kernel.ts --prefix "$ROOT/out/jupyter" >/dev/null; then
  echo "ci_notebooks: installing the kernelspec failed" >&2
  exit 1
fi
export JUPYTER_PATH="$ROOT/out/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"

# 2. execute (one kernel per notebook; run_notebooks.py keeps going after a failure)
if [ "$#" -gt 0 ]; then
  notebooks=("$@")
else
  notebooks=(notebooks/*.ipynb)
fi
mkdir -p "$OUT"
log="$OUT/run_notebooks.log"
"$PYTHON" scripts/run_notebooks.py --check --kernel nbtune --timeout 600 --out "$OUT" "${notebooks[@]}" 2>&1 |
  grep -v '^Warning "deno jupyter" is unstable' | tee "$log"
run_status=${PIPESTATUS[0]}
if [ "$run_status" -ne 0 ]; then status=1; fi
while IFS= read -r line; do summary+=("$line"); done < <(grep -E '^(ok|FAIL) ' "$log")

# 3. HTML + Chromium check of every executed notebook: charts drawn, legends clear of axes (box check)
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb")
  executed="$OUT/$name"
  if [ ! -f "$executed" ]; then
    summary+=("FAIL html check: $executed was not written")
    status=1
  elif deno run -A scripts/check_notebook_html.ts --out "$HTML_OUT" "$executed"; then
    summary+=("ok   html check of $name (screenshot $HTML_OUT/${name%.ipynb}.png)")
  else
    summary+=("FAIL html check of $name")
    status=1
  fi
done

echo
echo "== notebooks summary ($(($(date +%s) - started)) s in all) =="
printf '%s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
  echo "ci_notebooks: FAILED" >&2
else
  echo "ci_notebooks: all passed"
fi
exit "$status"

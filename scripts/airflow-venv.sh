#!/usr/bin/env bash
# The Airflow provider's test environment, apart from .venv so Airflow's pins never bend
# the product's own.
#
#   scripts/airflow-venv.sh        build what is missing or outdated; print the Python to use
#   scripts/airflow-venv.sh lock   recompile requirements-airflow.lock (needs uv; PyPI only)
#
# Two layers. The base (Airflow and every third-party package, from the hashed lock) is
# built once per lock under ${XDG_CACHE_HOME:-~/.cache}/mailconduit/airflow-<hash> and
# shared by every checkout on the machine. The overlay, .venv-airflow in this checkout,
# sees the base's packages through a .pth file and holds only this checkout's mailconduit
# (editable, so Airflow finds the provider's entry point); it takes seconds to make.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
lock="$root/requirements-airflow.lock"
py="${PY:-python3}"

if [ "${1:-}" = "lock" ]; then
  uv="${UV:-uv}"
  command -v "$uv" >/dev/null || { echo "lock needs uv: pip install uv, or set UV=/path/to/uv" >&2; exit 2; }
  cd "$root"
  "$uv" pip compile pyproject.toml requirements-airflow.in --python-version 3.11 \
    --generate-hashes --quiet --custom-compile-command "bash scripts/airflow-venv.sh lock" \
    -o requirements-airflow.lock
  exit 0
fi

# The base's recipe: bump it when the way the base is built changes.
recipe="pip install --require-hashes -r requirements-airflow.lock (1)"
key="$({ cat "$lock"; echo "$recipe"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/mailconduit"
base="$cache/airflow-$key"
overlay="$root/.venv-airflow"
mkdir -p "$cache"

# One builder at a time (base and overlay); a base build cut short is thrown away and made again.
exec 9>"$base.lock"
flock 9
if [ ! -e "$base/.complete" ]; then
  echo "building the Airflow test environment in $base (once per lock; a few minutes)" >&2
  rm -rf "$base"
  "$py" -m venv "$base"
  "$base/bin/python" -m pip install -q --require-hashes -r "$lock"
  touch "$base/.complete"
fi

site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
stamp="$overlay/.mailconduit-stamp"
want="$base $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$overlay"
  "$py" -m venv --without-pip "$overlay"
  echo "import site; site.addsitedir('$(site_of "$base/bin/python")')" \
    >"$(site_of "$overlay/bin/python")/_mailconduit_airflow_base.pth"
  "$base/bin/python" -m pip --python "$overlay/bin/python" install -q --no-deps -e "$root"
  echo "$want" >"$stamp"
fi
echo "$overlay/bin/python"

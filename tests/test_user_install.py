"""A user's install: the wheel carries every hparams YAML, and an installed copy outside the checkout
loads them from any working directory; a user's folder comes first; a missing YAML names both places."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from revive_plugin.editing import load_hparams
from revive_plugin.editing.hparams_files import packaged_yaml_names

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted(str(p.relative_to(REPO / "revive_plugin" / "hparams")) for p in
               (REPO / "revive_plugin" / "hparams").glob("*/*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel`` builds from a copy of the source (the checkout gets no build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "revive_plugin", src / "revive_plugin",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", str(src), "-w", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("revive_plugin-*.whl")
    return whl


def test_packaged_yamls_are_all_found():
    assert len(YAMLS) >= 25 and packaged_yaml_names() == YAMLS


def test_wheel_lists_every_yaml(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.removeprefix("revive_plugin/hparams/") for n in names
                  if n.startswith("revive_plugin/hparams/") and n.endswith(".yaml")) == YAMLS
    assert "revive_plugin/hparams/README.md" in names


def test_installed_copy_loads_hparams_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
                          "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import json, revive_plugin\n"
            "from revive_plugin.editing import load_hparams\n"
            "hp = load_hparams('MEMIT', 'smollm2-135m')\n"
            "print(json.dumps({'file': revive_plugin.__file__, 'layers': hp.layers, 'tau': hp.revive_tau}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=work, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(site.resolve())
    assert got["layers"] == [4, 5, 6, 7, 8] and got["tau"] == 0.1


def test_user_folder_comes_first_and_missing_yaml_names_both_places(tmp_path):
    (tmp_path / "MEMIT").mkdir()
    text = (REPO / "revive_plugin/hparams/MEMIT/smollm2-135m.yaml").read_text().replace(
        "layers: [4, 5, 6, 7, 8]", "layers: [3]")
    (tmp_path / "MEMIT" / "smollm2-135m.yaml").write_text(text)
    assert load_hparams("MEMIT", "smollm2-135m", tmp_path).layers == [3]
    assert load_hparams("AlphaEdit", "smollm2-135m", tmp_path).layers == [4, 5, 6, 7, 8]  # packaged fallback
    with pytest.raises(FileNotFoundError) as err:
        load_hparams("MEMIT", "no-such-model", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MEMIT" / "no-such-model.yaml") in msg
    assert "revive_plugin/hparams/MEMIT/no-such-model.yaml (shipped with revive-plugin)" in msg

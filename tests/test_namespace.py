"""One namespace: what is installed is ``coreset_meg.*``, each module under one name.

The folders ``anomaly/``, ``common/``, ``coreset/``, ``datasets/`` and ``gan/`` install as
``coreset_meg.anomaly``, ... (``pyproject.toml``'s ``package-dir``), so that they neither shadow
nor are shadowed by other top-level packages: Hugging Face's ``datasets`` made ``anomaly fit``
fail with ``cannot import name 'csv_feature_names' from 'datasets'``. The package folders'
doctests run here, on the modules as installed.
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "coreset_meg"
#: The folders that install inside the namespace, each as ``coreset_meg.<folder>``.
FOLDERS = ("anomaly", "common", "coreset", "datasets", "features", "gan")


def installed_modules() -> list[str]:
    """The installed name of every module of the package folders, ``coreset_meg`` first."""
    names = [NAMESPACE]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join((NAMESPACE, *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def test_pyproject_installs_every_package_folder_in_the_namespace():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = [init.parent for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")]
    expected = {NAMESPACE} | {".".join((NAMESPACE, *p.relative_to(ROOT).parts)) for p in folders}
    assert set(setuptools["packages"]) == expected
    assert setuptools["package-dir"] == {
        NAMESPACE: NAMESPACE,
        **{f"{NAMESPACE}.{folder}": folder for folder in FOLDERS},
    }


#: Run in a folder of other top-level packages named like our folders (each fails on import),
#: first on ``sys.path``: the console script's ``main`` fits a CSV, scores it, and fails on a
#: missing model (the error handler imported ``datasets`` too); then every module is imported.
#: Prints the exit codes and ``{module name: file}`` of everything loaded, as JSON.
SCENARIO = """
import importlib, json, sys
from coreset_meg.anomaly.cli import main
codes = [
    main(["fit", "train.csv", "--out", "model", "-q"]),
    main(["score", "model", "train.csv", "-q"]),
    main(["score", "nowhere", "train.csv"]),
]
for name in NAMES:
    importlib.import_module(name)
loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def beside_strangers(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    """``(the scenario's JSON, its process)``."""
    folder = tmp_path_factory.mktemp("strangers")
    for name in FOLDERS:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('the top-level package {name!r} of another project was imported')\n"
        )
    rows = np.random.default_rng(0).normal(size=(60, 3))
    (folder / "train.csv").write_text(
        "a,b,c\n" + "\n".join(",".join(f"{v:.4f}" for v in r) for r in rows) + "\n"
    )
    # ``-c`` puts the folder first on sys.path too; this checkout comes after it (its package
    # folders are importable as top-level names there, but the strangers come first).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    code = SCENARIO.replace("NAMES", repr(installed_modules()))
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=folder, env=env
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1]), run


def test_the_cli_fits_and_scores_beside_other_top_level_packages(beside_strangers):
    result, run = beside_strangers
    assert result["codes"] == [0, 0, 1], run.stderr
    assert "error: model folder not found" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr, run.stderr


def test_every_module_is_imported_once_under_its_installed_name(beside_strangers):
    loaded = beside_strangers[0]["loaded"]
    ours = {
        name: Path(file).resolve()
        for name, file in loaded.items()
        if file and Path(file).is_absolute() and Path(file).resolve().is_relative_to(ROOT)
    }
    assert set(installed_modules()) <= set(ours)
    assert sorted(n for n in ours if n != NAMESPACE and not n.startswith(NAMESPACE + ".")) == []
    files = list(ours.values())
    assert len(files) == len(set(files)), "a file is imported under two names"


def test_a_checkout_on_the_path_works_without_installing_it():
    # -S: no site-packages set-up, so no editable install's finder; the libraries' folders come
    # after the checkout on PYTHONPATH.
    libraries = [p for p in sys.path if p and Path(p).is_dir() and Path(p) != ROOT]
    code = (
        "import coreset_meg.anomaly.cli as cli, coreset_meg.datasets as d; "
        "print(cli.main(['--help']), cli.__file__, d.__file__)"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *libraries])},
    )
    assert run.returncode == 0, run.stderr
    code, cli_file, datasets_file = run.stdout.split()[-3:]
    assert code == "0"
    assert Path(cli_file) == ROOT / "anomaly" / "cli.py"
    assert Path(datasets_file) == ROOT / "datasets" / "__init__.py"


def test_the_namespace_re_exports_the_detectors_api():
    import coreset_meg
    from coreset_meg import anomaly

    assert coreset_meg.__all__ == anomaly.__all__
    assert coreset_meg.__version__ == anomaly.__version__
    assert coreset_meg.MEGDetector is anomaly.MEGDetector
    assert set(anomaly.__all__) <= set(dir(coreset_meg))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        coreset_meg.nothing  # noqa: B018


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found = []
    for name in installed_modules():
        found += [t for t in finder.find(importlib.import_module(name), name) if t.examples]
    return found


@pytest.mark.parametrize("test", _doctests(), ids=lambda t: t.name)
def test_doctest(test: doctest.DocTest):
    """The examples of one docstring, with pytest's default doctest option (ELLIPSIS)."""
    report: list[str] = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=report.append)
    assert result.failed == 0, "".join(report)


_EMB, _PRE = "coreset_meg.features.embeddings", "coreset_meg.features.pretrained"
_KCENTER, _BACKENDS = "coreset_meg.coreset.kcenter", "coreset_meg.features.backends"


@pytest.mark.parametrize(
    "old, name, new, new_name",
    [
        ("coreset_meg.coreset", "make_embedder", _PRE, "make_embedder"),
        ("coreset_meg.coreset", "compute_embeddings", _EMB, "compute_embeddings"),
        ("coreset_meg.coreset.features", "FeatureEmbedder", _PRE, "FeatureEmbedder"),
        ("coreset_meg.coreset.embeddings", "unit_length", _EMB, "unit_length"),
        ("coreset_meg.coreset.backends", "make_runner", _BACKENDS, "make_runner"),
        ("coreset_meg.anomaly.builtin_features", "dataset_features", "coreset_meg.features.builtin",
         "dataset_features"),
        ("coreset_meg.coreset", "check_random_state", _KCENTER, "check_generator"),
        (_KCENTER, "check_random_state", _KCENTER, "check_generator"),
    ],
)  # fmt: skip
def test_moved_names_still_work_and_say_where_they_are_now(old, name, new, new_name):
    module = importlib.import_module(old)
    with pytest.warns(FutureWarning, match=f"use {new}.{new_name}".replace(".", r"\.")):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), new_name)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018

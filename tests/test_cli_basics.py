"""What every command shares: version, a fast start, log levels, JSON output and errors,
shell completion."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

from coreset_meg import anomaly
from coreset_meg.anomaly import cli
from coreset_meg.anomaly.cli import main


@pytest.fixture(autouse=True)
def _restore_logging():
    level = logging.getLogger().level
    yield
    cli._LOGGING["level"] = None
    logging.getLogger().setLevel(level)


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_matches_the_installed_package(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.split()[-1] == anomaly.__version__ == metadata.version("coreset-meg")


def test_help_imports_neither_torch_nor_scikit_learn():
    # What makes --help start in well under a second: the heavy libraries load on first use.
    script = (
        "import sys; from coreset_meg.anomaly.cli import main; code = main(['--help']); "
        "print(code, 'torch' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[-3:] == ["0", "False", "False"]


def test_public_names_still_import():
    from coreset_meg.anomaly import MEGDetector, ModelFileError, auroc, load_model

    assert MEGDetector.__name__ == "MEGDetector"
    assert issubclass(ModelFileError, ValueError)
    assert callable(auroc) and callable(load_model)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        anomaly.nothing  # noqa: B018


@pytest.mark.parametrize(
    "options, level",
    [([], logging.INFO), (["-v"], logging.DEBUG), (["--log-level", "error"], logging.ERROR)],
)
def test_log_level_options(options, level, capsys):
    code, _, _ = run([*options, "fit", "--dry-run"], capsys)
    assert code == 0
    assert logging.getLogger().level == level


def test_quiet_means_warning_unless_a_level_is_given(capsys):
    assert run(["fit", "--dry-run", "--quiet"], capsys)[0] == 0
    assert logging.getLogger().level == logging.WARNING
    assert run(["--log-level", "debug", "fit", "--dry-run", "--quiet"], capsys)[0] == 0
    assert logging.getLogger().level == logging.DEBUG


def test_errors_are_json_under_json(tmp_path, capsys):
    code, out, err = run(["score", str(tmp_path / "missing"), "x.csv", "--json"], capsys)
    assert code == 1 and err == ""
    assert json.loads(out) == {"error": f"model folder not found: {tmp_path / 'missing'}",
                               "exit_code": 1}  # fmt: skip
    code, out, _ = run(["fit", "--no-such-option", "--json"], capsys)
    assert code == 2 and "no-such-option" in json.loads(out)["error"]
    # Without --json the error stays one line on stderr.
    code, out, err = run(["score", str(tmp_path / "missing"), "x.csv"], capsys)
    assert code == 1 and out == "" and err.startswith("error: model folder not found")


def test_benchmark_json(tmp_path, capsys):
    argv = ["benchmark", "mixture", "--quick", "--sides", "5", "--seeds", "0", "-q", "--json"]
    code, out, _ = run([*argv, "--out", str(tmp_path)], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["benchmark"] == "mixture" and result["out"] == str(tmp_path / "mixture")
    assert result["report"].startswith("# Mode coverage")
    assert len(result["results"]) >= 1 and "modes_recovered" in result["results"][0]


def test_shell_completion_completes_commands_and_options(monkeypatch, capsys):
    monkeypatch.setenv("_ANOMALY_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "anomaly sc")
    monkeypatch.setenv("COMP_CWORD", "1")
    with pytest.raises(SystemExit):
        cli.app(prog_name="anomaly")
    assert capsys.readouterr().out.split() == ["score"]
    monkeypatch.setenv("COMP_WORDS", "anomaly fit --n-it")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit):
        cli.app(prog_name="anomaly")
    assert capsys.readouterr().out.split() == ["--n-iter"]


def test_fit_report_writes_training_curves(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.normal(size=(80, 3)).astype(np.float32))
    argv = ["fit", str(tmp_path / "train.npy"), "--n-iter", "4", "--quiet"]
    code, _, err = run([*argv, "--out", str(tmp_path / "m"), "--report", str(tmp_path / "r")],
                       capsys)  # fmt: skip
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    pngs = sorted((tmp_path / "r").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(p.name in page for p in pngs)


def test_fit_report_into_a_users_folder_is_refused_before_training(tmp_path, capsys):
    np.save(tmp_path / "train.npy", np.zeros((40, 3), dtype=np.float32))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    argv = ["fit", str(tmp_path / "train.npy"), "--n-iter", "4", "--quiet"]
    code, _, err = run([*argv, "--out", str(tmp_path / "m"), "--report", str(tmp_path / "r")],
                       capsys)  # fmt: skip
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"

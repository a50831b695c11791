"""The command line: `anomaly fit` and `anomaly score` as a user runs them."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from coreset_meg.anomaly import MEGDetector
from coreset_meg.anomaly.cli import app, main

FAST = ["--n-iter", "4", "--n-energy-steps", "1", "--width", "16", "--quiet"]


@pytest.fixture
def table(tmp_path):
    """A CSV of 2-D normal points, a CSV of test points with labels, and their label file."""
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(120, 2)), columns=["a", "b"])
    train.to_csv(tmp_path / "train.csv", index=False)
    test = pd.DataFrame(np.vstack([rng.normal(size=(20, 2)), rng.normal(8, 1, size=(5, 2))]))
    test.columns = ["a", "b"]
    test["label"] = [0] * 20 + [1] * 5
    test.to_csv(tmp_path / "test.csv", index=False)
    np.save(tmp_path / "labels.npy", test["label"].to_numpy())
    return tmp_path


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_and_score_on_csv(table, capsys):
    model = table / "model"
    code, out, _ = run(["fit", str(table / "train.csv"), "--out", str(model), *FAST], capsys)
    assert code == 0, out
    assert (model / "weights.safetensors").exists() and (model / "model.json").exists()
    scores = table / "scores.csv"
    code, out, err = run(
        ["score", str(model), str(table / "test.csv"), "--label-column", "label"]
        + ["--out", str(scores), "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert {"auroc", "auprc", "average_precision"} <= set(result)
    frame = pd.read_csv(scores)
    assert list(frame.columns) == ["index", "anomaly_score", "is_anomaly"]
    assert len(frame) == 25
    assert np.isfinite(frame.anomaly_score).all()  # one score: higher = more anomalous
    assert set(frame.is_anomaly) <= {0, 1}


def test_score_with_label_file_prints_metrics(table, capsys):
    model = table / "model"
    assert main(["fit", str(table / "train.csv"), "--out", str(model), *FAST]) == 0
    test = pd.read_csv(table / "test.csv").drop(columns="label")
    test.to_csv(table / "unlabelled.csv", index=False)
    capsys.readouterr()
    code, out, _ = run(
        ["score", str(model), str(table / "unlabelled.csv"), "--labels", str(table / "labels.npy")]
        + ["--out", str(table / "s.csv")],
        capsys,
    )
    assert code == 0
    assert "AUROC" in out and "AUPRC" in out


def test_fit_builtin_digits_prints_metrics(tmp_path, capsys):
    code, out, _ = run(["fit", "--out", str(tmp_path / "m"), "--json", *FAST], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["dataset"] == "digits"
    assert 0.0 <= result["auroc"] <= 1.0 and result["n_test"] > 0


def test_fit_and_score_image_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder in ("train/a", "test/a"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 255, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / folder / f"{i}.png")
    model = tmp_path / "model"
    assert main(["fit", str(tmp_path / "train"), "--out", str(model), *FAST]) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["input_shape"] == [1, 28, 28]
    code, _, err = run(
        ["score", str(model), str(tmp_path / "test"), "--out", str(tmp_path / "s.csv")], capsys
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "s.csv")) == 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "missing.csv"], "not found"),
        (["fit", "--protocol", "sideways"], "sideways"),
        (["fit", "--bogus"], "No such option"),
        (["fit", "--contamination", "lots"], "contamination"),
        (["score", "no-model", "x.csv"], "model folder not found"),
        (["fit", "--embedding", "missing.pt", "--n-iter", "2"], "missing.pt"),
    ],
)
def test_bad_input_gives_one_line_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_bad_data_files_and_wrong_feature_count(table, capsys):
    (table / "nan.csv").write_text("a,b\n1,2\n3,nan\n")
    (table / "empty.csv").write_text("")
    for bad in ("nan.csv", "empty.csv"):
        code, _, err = run(["fit", str(table / bad), *FAST], capsys)
        assert code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    model = table / "model"
    assert main(["fit", str(table / "train.csv"), "--out", str(model), *FAST]) == 0
    pd.DataFrame(np.zeros((3, 5))).to_csv(table / "wide.csv", index=False)
    scores = table / "keep.csv"
    scores.write_text("old content")
    code, _, err = run(["score", str(model), str(table / "wide.csv"), "--out", str(scores)], capsys)
    assert code == 1 and "features" in err
    assert scores.read_text() == "old content"  # nothing on disk lost or half-written


def _flat(resolved: dict) -> dict:
    """The settings of a --dry-run output, by name."""
    return {k: v for group in resolved["settings"].values() for k, v in group.items()}


def test_config_file_round_trip_and_command_line_overrides(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(app, ["fit", "--dry-run", "--dataset", "mnist", "--width", "8",
                                  "--betas", "0.4", "0.8", "--class", "3"])  # fmt: skip
    assert printed.exit_code == 0
    config = tmp_path / "run.json"
    config.write_text(printed.output)
    again = runner.invoke(app, ["fit", "--config", str(config), "--dry-run"])
    assert json.loads(again.output) == json.loads(printed.output)
    over = runner.invoke(app, ["fit", "--config", str(config), "--dry-run", "--json",
                               "--n-iter", "7", "--class", "5"])  # fmt: skip
    resolved = json.loads(over.output)
    assert resolved["class"] == 5 and resolved["dataset"] == "mnist"
    flat = _flat(resolved)
    assert (flat["n_iter"], flat["width"], flat["betas"]) == (7, 8, [0.4, 0.8])
    config.write_text('{"settings": {"networks": {"widht": 3}}}')
    bad = runner.invoke(app, ["fit", "--config", str(config), "--dry-run"])
    assert bad.exit_code != 0


def test_every_setting_is_an_option_and_a_detector_parameter():
    from coreset_meg.anomaly.settings import GROUPS, default_settings
    from coreset_meg.gan.config import setting_fields

    names = {field.name for _, field in setting_fields(GROUPS)}
    assert names == set(MEGDetector()._settings()) == set(default_settings())
    help_text = CliRunner().invoke(app, ["fit", "--help"]).output
    for _, field in setting_fields(GROUPS):
        if field.metadata["option"] is not None:
            option = field.metadata["option"] or field.name
            assert "--" + option.replace("_", "-") in help_text


def test_help_and_dry_run_with_cli_runner():
    runner = CliRunner()
    result = runner.invoke(app, ["fit", "--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--protocol", "--class", "--seed", "--no-coreset", "--json"):
        assert option in result.output
    result = runner.invoke(app, ["fit", "--dry-run", "--json", "--no-coreset", "--seed", "3"])
    assert result.exit_code == 0
    resolved = _flat(json.loads(result.output))
    assert resolved["data_factor"] == 1 and resolved["prior_factor"] == 1
    assert resolved["random_state"] == 3
    # Built-in image data get the benchmarks' image defaults (the core-set energy on
    # features); options override them.
    result = runner.invoke(app, ["fit", "--dry-run", "--json", "--dataset", "mnist"])
    params = _flat(json.loads(result.output))
    assert (params["network"], params["view"], params["features"]) == ("coreset", "auto", "auto")
    result = runner.invoke(
        app,
        ["fit", "--dry-run", "--json", "--dataset", "mnist", "--data-factor", "1"]
        + ["--view", "pixels", "--temperature", "0.1"],
    )
    params = _flat(json.loads(result.output))
    assert params["data_factor"] == 1 and params["view"] == "pixels"
    assert params["temperature"] == 0.1
    vectors = _flat(json.loads(runner.invoke(app, ["fit", "--dry-run", "--json"]).output))
    assert vectors["data_factor"] == 8 and vectors["score_type"] == "energy"


def test_console_script_exit_codes(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "coreset_meg.anomaly.cli", "fit", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0 and "settings" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "coreset_meg.anomaly.cli", "score", "nowhere", "x.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def test_benchmark_command_writes_its_outputs(tmp_path, capsys):
    argv = ["benchmark", "heldout", "--dataset", "digits", "--classes", "1", "--seeds", "0"]
    code, out, _ = run([*argv, "--quick", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "kNN" in out
    folder = tmp_path / "heldout-digits"
    assert (folder / "results.csv").exists() and (folder / "table.md").exists()
    code, _, err = run(["benchmark", "heldout", "--seeds", "a,b", "--quick"], capsys)
    assert code == 1 and "--seeds" in err
    code, _, err = run(["benchmark", "mixture", "--jobs", "2", "--quick"], capsys)
    assert code == 1 and "--jobs" in err and "mixture" in err
    code, _, err = run(["benchmark", "cost", "--resume", "--quick"], capsys)
    assert code == 1 and "--resume" in err and "cost" in err
    code, _, err = run(["benchmark", "heldout", "--jobs", "0", "--quick"], capsys)
    assert code == 2 and "--jobs" in err


def test_fit_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(60, 3)), columns=list("abc")).to_csv(tmp_path / "good.csv")
    keep = tmp_path / "d"
    (keep / "sub").mkdir(parents=True)
    (keep / "notes.txt").write_text("keep")
    code = main(["fit", str(tmp_path / "good.csv"), "--out", str(keep), *FAST])
    assert code == 1 and "not a model folder" in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "keep" and (keep / "sub").is_dir()
    # A model folder written by this program is replaced; an empty folder is used.
    assert main(["fit", str(tmp_path / "good.csv"), "--out", str(tmp_path / "m"), *FAST]) == 0
    assert main(["fit", str(tmp_path / "good.csv"), "--out", str(tmp_path / "m"), *FAST]) == 0


def test_score_output_never_replaces_an_input_or_a_device(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "x.csv"
    pd.DataFrame(rng.normal(size=(40, 3)), columns=list("abc")).to_csv(data, index=False)
    assert main(["fit", str(data), "--out", str(tmp_path / "m"), *FAST]) == 0
    before = data.read_bytes()
    assert main(["score", str(tmp_path / "m"), str(data), "--out", str(data), "-q"]) == 1
    assert "input" in capsys.readouterr().err and data.read_bytes() == before
    assert main(["score", str(tmp_path / "m"), str(data), "--out", "-", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("index,anomaly_score") and len(captured.out.splitlines()) == 41
    assert not (tmp_path / "-").exists() and not pathlib.Path("-").exists()
    assert main(["score", str(tmp_path / "m"), str(data), "--out", "/dev/null", "-q"]) == 0
    assert pathlib.Path("/dev/null").is_char_device()


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import coreset_meg.anomaly.cli as cli

    data = tmp_path / "x.csv"
    pd.DataFrame(np.ones((20, 2)), columns=["a", "b"]).to_csv(data, index=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: p != locked and real_access(p, mode))
    monkeypatch.setattr(cli, "load_user_data", lambda *a, **k: pytest.fail("read before check"))
    code = main(["fit", str(data), "--out", str(locked / "new" / "m"), *FAST])
    assert code == 1 and "not writable" in capsys.readouterr().err


def test_no_coreset_conflicts_with_a_selection_factor():
    result = CliRunner().invoke(app, ["fit", "--dry-run", "--no-coreset", "--data-factor", "8"])
    assert result.exit_code != 0 and "--data-factor 8" in str(result.exception)


def test_score_compares_csv_headers_with_the_training_columns(tmp_path, capsys):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert main(["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), *FAST]) == 0
    frame[["c", "b", "a"]].to_csv(tmp_path / "swapped.csv", index=False)
    out = tmp_path / "s.csv"
    code = main(["score", str(tmp_path / "m"), str(tmp_path / "swapped.csv"), "--out", str(out)])
    assert code == 1 and "feature names differ" in capsys.readouterr().err and not out.exists()


def test_fit_killed_and_resumed_ends_as_an_uninterrupted_fit(tmp_path):
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    data = tmp_path / "x.csv"
    rng = np.random.default_rng(3)
    pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc")).to_csv(data, index=False)
    args = [sys.executable, "-m", "coreset_meg.anomaly.cli", "fit", str(data), "--n-iter", "300",
            "--n-energy-steps", "1", "--width", "8", "--batch-size", "16", "-q"]  # fmt: skip
    out = tmp_path / "m"
    checkpoint = tmp_path / ".m.checkpoint.pt"
    proc = subprocess.Popen([*args, "--out", str(out), "--checkpoint-every", "5"])
    while not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-training, after the first checkpoint
    assert proc.wait() == -signal.SIGKILL and not out.exists()
    resumed = subprocess.run([*args, "--out", str(out), "--resume"], capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists()  # removed once the model is saved
    whole = subprocess.run([*args, "--out", str(tmp_path / "w")], capture_output=True)
    assert whole.returncode == 0, whole.stderr
    a = load_file(out / "weights.safetensors")
    b = load_file(tmp_path / "w" / "weights.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("energy_nets."))
    again = subprocess.run([*args, "--out", str(tmp_path / "n"), "--resume"], capture_output=True)
    assert again.returncode == 1 and b"nothing to resume" in again.stderr


def test_the_demo_trains_nothing_as_the_readme_says(tmp_path, capsys):
    """`anomaly fit` with no arguments (the README's first command) scores with the core-set
    energy as placed: no MEG iterations, no generator saved (README: "fits in about 5 seconds
    ... no MEG training")."""
    from safetensors import safe_open

    model = tmp_path / "m"
    code, out, err = run(["fit", "--out", str(model), "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["auroc"] > 0.9
    meta = json.loads((model / "model.json").read_text())
    assert meta["training"]["history"] == []
    with safe_open(model / "weights.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and not any(name.startswith("generator.") for name in names)
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    assert "no MEG training" in readme

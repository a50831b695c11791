"""Reliability of what the command line writes and reads: model folders, outputs, checkpoints,
and the environment it runs in (nothing lost, nothing run that the user did not ask for)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest

from coreset_meg.anomaly.cli import main

FAST = ["--n-iter", "4", "--n-energy-steps", "1", "--width", "8", "--quiet"]


@pytest.fixture
def csv(tmp_path):
    """A small CSV of 2-D normal points."""
    rng = np.random.default_rng(0)
    path = tmp_path / "x.csv"
    pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"]).to_csv(path, index=False)
    return path


@pytest.fixture
def model(csv, tmp_path):
    """A model folder fitted on ``csv``."""
    assert main(["fit", str(csv), "--out", str(tmp_path / "m"), *FAST]) == 0
    return tmp_path / "m"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the environment
@pytest.mark.parametrize("variables", [{"RANK": "1"}, {"RANK": "1", "LOCAL_RANK": "1"}])
def test_stray_rank_still_writes_the_model_and_the_scores(variables, csv, tmp_path, capsys,
                                                          caplog, monkeypatch):  # fmt: skip
    for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, _, _ = run(["fit", csv, "--out", tmp_path / "m", *FAST[:-1]], capsys)
    assert code == 0 and (tmp_path / "m" / "model.json").is_file()
    assert "ignoring RANK=1" in caplog.text and "single process" in caplog.text
    code, out, _ = run(["score", tmp_path / "m", csv, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert code == 0 and len(pd.read_csv(tmp_path / "s.csv")) == 60 and "scored 60" in out


def test_stale_world_size_fails_fast_naming_the_variables(model, csv, tmp_path, capsys,
                                                          monkeypatch):  # fmt: skip
    pytest.importorskip("torch.distributed")
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "ANOMALY_RENDEZVOUS_TIMEOUT": "2"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(["score", model, csv, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert code == 1 and "did not join within 2 s" in err
    assert "WORLD_SIZE=2" in err and "MASTER_PORT=" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR")
    code, _, err = run(["score", model, csv, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert code == 1 and "MASTER_ADDR" in err
    assert not (tmp_path / "s.csv").exists()


# ------------------------------------------------------------- outputs and inputs apart
@pytest.mark.parametrize("name", ["model.json", "weights.safetensors", "new.csv"])
def test_score_out_inside_the_model_folder_is_refused(name, model, csv, capsys):
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    code, _, err = run(["score", model, csv, "--out", model / name, "-q"], capsys)
    assert code == 1 and "model folder" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    code, _, err = run(["score", model, csv, "--out", "-", "--report", model / "r", "-q"], capsys)
    assert code == 1 and "--report" in err and not (model / "r").exists()


def test_fit_keeps_a_users_file_in_a_model_folder(model, csv, capsys):
    (model / "notes.txt").write_text("mine")
    code, _, err = run(["fit", csv, "--out", model, *FAST], capsys)
    assert code == 1 and "notes.txt" in err
    assert (model / "notes.txt").read_text() == "mine"


def test_fit_refuses_a_data_or_config_file_inside_out(model, csv, tmp_path, capsys):
    inside = model / "train.csv"
    inside.write_bytes(csv.read_bytes())
    code, _, err = run(["fit", inside, "--out", model, *FAST], capsys)
    assert code == 1 and "the data" in err and inside.read_bytes() == csv.read_bytes()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "c.json").write_text(json.dumps({"out": str(fresh)}))
    code, _, err = run(["fit", csv, "--config", fresh / "c.json", *FAST], capsys)
    assert code == 1 and "config file" in err and (fresh / "c.json").exists()


def test_every_destination_is_checked_before_training(csv, tmp_path, capsys, monkeypatch):
    import coreset_meg.anomaly.cli as cli

    monkeypatch.setattr(cli, "load_user_data", lambda *a, **k: pytest.fail("read before check"))
    out = tmp_path / "m"
    code, _, err = run(["fit", csv, "--out", out, "--report", out, *FAST], capsys)
    assert code == 1 and "--report" in err
    code, _, err = run(["fit", csv, "--out", out, "--report", out / "r", *FAST], capsys)
    assert code == 1 and "--report" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    code, _, err = run(["fit", csv, "--out", ".", *FAST], capsys)
    assert code == 1 and "current folder" in err


def test_a_report_inside_the_image_folder_is_refused(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(images / f"{i}.png")
    data = tmp_path / "images"
    argv = ["fit", data, "--out", tmp_path / "m", "--report", data / "report", *FAST]
    code, _, err = run(argv, capsys)
    assert code == 1 and "inside the data" in err and not (data / "report").exists()


def test_a_rerun_keeps_the_interrupted_runs_checkpoint(csv, tmp_path, capsys):
    checkpoint = tmp_path / ".m.checkpoint.pt"
    checkpoint.write_bytes(b"an interrupted run's work")
    code, _, err = run(["fit", csv, "--out", tmp_path / "m", *FAST], capsys)
    assert code == 1 and "--resume" in err and "--restart" in err
    assert checkpoint.read_bytes() == b"an interrupted run's work"
    code, _, err = run(["fit", csv, "--out", tmp_path / "m", "--restart", *FAST], capsys)
    assert code == 0, err
    assert not checkpoint.exists() and (tmp_path / "m" / "model.json").is_file()


# ------------------------------------------------------------- what a save may replace
def test_a_fit_that_cannot_make_a_valid_model_keeps_the_old_one(model, csv, capsys):
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    for option in (["--max-centres", "1"], ["--coreset-fraction", "0.01"]):
        code, _, err = run(["fit", csv, "--out", model, *option, *FAST], capsys)
        assert code == 1 and ("max_centres" in err or "coreset_fraction" in err), err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_an_invalid_fitted_state_is_not_saved_over_a_model(model, csv):
    from coreset_meg.anomaly import MEGDetector, load_model, save_model
    from coreset_meg.anomaly.persistence import ModelFileError
    from coreset_meg.gan import MEGConfig

    training = MEGConfig.from_params(width=8)
    detector = MEGDetector(n_iter=4, training=training, random_state=0).fit(pd.read_csv(csv))
    detector.offset_ = float("nan")
    before = (model / "weights.safetensors").read_bytes()
    with pytest.raises(ModelFileError, match="offset is not finite"):
        save_model(detector, model)
    assert (model / "weights.safetensors").read_bytes() == before
    load_model(model)


# ---------------------------------------------------------------------- checkpoints
def test_a_finished_fits_checkpoint_is_not_resumed_on_other_data(tmp_path):
    import torch

    from coreset_meg.anomaly import MEGDetector

    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(60, 2)), rng.normal(3, 1, size=(60, 2))
    checkpoint = tmp_path / "ck.pt"
    from coreset_meg.gan import MEGConfig

    training = MEGConfig.from_params(width=8, n_energy_steps=1)
    params = dict(n_iter=4, training=training, random_state=0)
    MEGDetector(**params, checkpoint_path=str(checkpoint)).fit(first)
    assert checkpoint.exists()
    resumed = MEGDetector(**params, checkpoint_path=str(checkpoint)).fit(second)
    clean = MEGDetector(**params).fit(second)
    np.testing.assert_array_equal(resumed.score_samples(second), clean.score_samples(second))
    # An unfinished run's checkpoint is resumed on its own data only.
    state = torch.load(checkpoint, weights_only=True)
    state["step"] = 2
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match="other training data"):
        MEGDetector(**params, checkpoint_path=str(checkpoint)).fit(first)
    MEGDetector(**params, checkpoint_path=str(checkpoint)).fit(second)


# ------------------------------------------------------------------ reading a model
def _rewrite_weights(model, change):
    """Change the weights file with ``change(tensors)`` and keep model.json consistent with it
    (as a tool rewriting both would), so that only the content checks can catch it."""
    from safetensors.torch import load_file, save_file

    from coreset_meg.anomaly.persistence import file_sha256

    tensors = load_file(model / "weights.safetensors")
    change(tensors)
    save_file(tensors, model / "weights.safetensors")
    config = json.loads((model / "model.json").read_text())
    config["weights_sha256"] = file_sha256(model / "weights.safetensors")
    (model / "model.json").write_text(json.dumps(config))


def test_weights_are_checked_by_checksum_dtype_and_finiteness(model, csv, tmp_path, capsys):
    import torch

    from coreset_meg.anomaly import load_model
    from coreset_meg.anomaly.persistence import ModelFileError

    weights = model / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10  # one flipped bit in the last tensor's values
    saved = weights.read_bytes()
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(model)
    code, _, err = run(["score", model, csv, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert code == 1 and "checksum" in err and not (tmp_path / "s.csv").exists()
    weights.write_bytes(saved)
    key = next(k for k in json.loads(saved[8 : 8 + int.from_bytes(saved[:8], "little")])
               if k.startswith("energy_nets.0.") and "centres" in k)  # fmt: skip

    def nan(tensors):
        tensors[key] = torch.full_like(tensors[key], float("nan"))

    _rewrite_weights(model, nan)
    with pytest.raises(ModelFileError, match="not finite"):
        load_model(model)

    def integers(tensors):
        tensors[key] = torch.zeros_like(tensors[key], dtype=torch.int32)

    _rewrite_weights(model, integers)
    with pytest.raises(ModelFileError, match="int32"):
        load_model(model)


def test_weights_follow_the_umask(csv, tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        assert main(["fit", str(csv), "--out", str(tmp_path / "m"), *FAST]) == 0
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_model_json_that_is_no_regular_file_or_nested_deep_is_refused(model, tmp_path):
    import os

    from coreset_meg.anomaly import load_model
    from coreset_meg.anomaly.persistence import ModelFileError

    config = model / "model.json"
    config.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="nested too deeply"):
        load_model(model)
    config.unlink()
    config.symlink_to("/dev/zero")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(model)
    config.unlink()
    os.mkfifo(config)  # opening it for reading would wait for a writer forever
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(model)
    config.unlink()
    config.write_text(json.dumps({"format": "coreset-meg-model", "format_version": 3}))
    (model / "weights.safetensors").unlink()
    os.mkfifo(model / "weights.safetensors")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(model)


def test_a_full_disk_names_the_destination(model, csv, monkeypatch, capsys):
    import errno

    import coreset_meg.anomaly.persistence as persistence

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = (model / "weights.safetensors").read_bytes()
    monkeypatch.setattr(persistence, "save_file", full)
    code, _, err = run(["fit", csv, "--out", model, *FAST], capsys)
    assert code == 1 and str(model) in err and "no space left" in err
    assert len(err.strip().splitlines()) == 1
    assert (model / "weights.safetensors").read_bytes() == before


# ------------------------------------------------------------- interrupted and concurrent
def _dead_pid() -> int:
    import os

    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_sigterm_during_score_leaves_no_partial_file(model, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(1)
    big = tmp_path / "big.csv"
    pd.DataFrame(rng.normal(size=(400_000, 2)), columns=["a", "b"]).to_csv(big, index=False)
    out = tmp_path / "scores"
    out.mkdir()
    stale = out / f".old.csv.tmp-{_dead_pid()}-abcd1234.csv"  # a killed run's partial file
    stale.write_text("index,anomaly_score\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "coreset_meg.anomaly.cli", "score", str(model), str(big), "-q"]
    proc = subprocess.Popen([*args, "--out", str(out / "s.csv")], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    while proc.poll() is None and not any(p != stale for p in out.glob(".s.csv.tmp-*")):
        time.sleep(0.01)
    assert not stale.exists()  # swept by the next run into the folder
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "SIGTERM" in err, err
    assert "Traceback" not in err and list(out.iterdir()) == []


def test_two_saves_into_one_folder_take_turns(model, tmp_path, monkeypatch):
    import threading
    import time

    import coreset_meg.anomaly.persistence as persistence
    from coreset_meg.anomaly import load_model, save_model

    detector = load_model(model)
    real = persistence.save_file

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence, "save_file", slow)
    errors = []

    def save():
        try:
            save_model(detector, tmp_path / "shared")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=save) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    load_model(tmp_path / "shared")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_fit_out_through_a_symlink_saves_to_its_target(model, csv, tmp_path, capsys):
    import os

    link = tmp_path / "link"
    link.symlink_to(model)
    before = (model / "weights.safetensors").read_bytes()
    code, _, err = run(["fit", csv, "--out", link, "--seed", "3", *FAST], capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(model)
    assert (model / "weights.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_benchmark_keeps_an_earlier_runs_results(tmp_path, capsys):
    folder = tmp_path / "heldout-digits"
    folder.mkdir()
    (folder / "results.csv").write_text("kept\n")
    argv = ["benchmark", "heldout", "--dataset", "digits", "--classes", "1", "--seeds", "0"]
    argv += ["--quick", "--out", tmp_path, "-q"]
    code, _, err = run(argv, capsys)
    assert code == 1 and "--resume" in err and "--overwrite" in err
    assert (folder / "results.csv").read_text() == "kept\n"
    code, out, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert (folder / "results.csv").read_text() != "kept\n"


# ------------------------------------------------------- what a model file may make us do
def _tiny_torchscript(path):
    import warnings

    import torch

    class Means(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is flagged deprecated
        torch.jit.script(Means()).save(str(path))
    return path


def test_a_model_running_a_torchscript_file_needs_it_given(tmp_path, capsys):
    from coreset_meg.anomaly import MEGDetector, load_model, save_model
    from coreset_meg.anomaly.persistence import ModelFileError

    code = _tiny_torchscript(tmp_path / "features.pt")
    images = np.random.default_rng(0).uniform(-1, 1, size=(40, 3, 8, 8)).astype(np.float32)
    det = MEGDetector(n_iter=4, view="features", features=f"torchscript:{code}@8",
                      random_state=0).fit(images)  # fmt: skip
    save_model(det, tmp_path / "m")
    with pytest.raises(ModelFileError, match="TorchScript file"):
        load_model(tmp_path / "m")
    np.save(tmp_path / "x.npy", images)
    argv = ["score", tmp_path / "m", tmp_path / "x.npy", "--out", tmp_path / "s.csv", "-q"]
    code_, _, err = run(argv, capsys)
    assert code_ == 1 and "--features-file" in err
    other = _tiny_torchscript(tmp_path / "other.pt")
    other.write_bytes(other.read_bytes() + b"\0")  # another file
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(tmp_path / "m", features_file=other)
    code_, _, err = run([*argv, "--features-file", code], capsys)
    assert code_ == 0, err
    np.testing.assert_allclose(
        -pd.read_csv(tmp_path / "s.csv")["anomaly_score"], det.score_samples(images), rtol=1e-6
    )


def test_a_model_whose_feature_weights_are_missing_fails_in_one_line(tmp_path, monkeypatch):
    import coreset_meg.features.pretrained as pretrained
    from coreset_meg.anomaly import MEGDetector, load_model, save_model
    from coreset_meg.anomaly.persistence import ModelFileError

    code = _tiny_torchscript(tmp_path / "features.pt")
    images = np.random.default_rng(0).uniform(-1, 1, size=(40, 3, 8, 8)).astype(np.float32)
    det = MEGDetector(view="features", features=f"torchscript:{code}@8", random_state=0)
    save_model(det.fit(images), tmp_path / "m")

    def missing(*args, **kwargs):
        raise pretrained.MissingWeightsError("the weights package is not installed")

    monkeypatch.setattr(pretrained, "make_embedder", missing)
    with pytest.raises(ModelFileError, match="feature extractor cannot be built") as err:
        load_model(tmp_path / "m", features_file=code)
    assert str(tmp_path / "m") in str(err.value) and "\n" not in str(err.value)


def test_where_files_go_is_not_the_model_files_choice(model, csv, tmp_path, capsys):
    from coreset_meg.anomaly import load_model

    config = json.loads((model / "model.json").read_text())
    config["settings"]["run"]["cache_dir"] = str(tmp_path / "elsewhere")
    config["settings"]["run"]["checkpoint_path"] = str(tmp_path / "ck.pt")
    (model / "model.json").write_text(json.dumps(config))
    detector = load_model(model)
    assert detector.cache_dir is None and detector.checkpoint_path is None
    assert load_model(model, cache_dir=tmp_path / "c").cache_dir == str(tmp_path / "c")


# ------------------------------------------------------------ one line, never a traceback
@pytest.mark.parametrize(
    "config, message",
    [
        ({"settings": {"objective": {"betas": 0.5}}}, "betas"),
        ({"out": None}, "out"),
        ({"data": 5}, "data"),
        ({"class": "x"}, "class"),
        ({"settings": {"networks": {"gaussian_weight": "a"}}}, "gaussian_weight"),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line_errors(config, message, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    code, _, err = run(["fit", "--config", path, "--out", tmp_path / "m", *FAST], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_deep_configs_and_unexpandable_data_roots_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    code, _, err = run(["fit", "--config", path, "--out", tmp_path / "m", *FAST], capsys)
    assert code == 1 and "nested too deeply" in err
    argv = ["fit", "--dataset", "mnist", "--data-root", "~nosuchuser/x", "--out", tmp_path / "m"]
    code, _, err = run([*argv, *FAST], capsys)
    assert code == 1 and "--data-root" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "option",
    [
        ["--learning-rate", "nan"],
        ["--temperature", "inf"],
        ["--coreset-fraction", "nan"],
        ["--entropy-weight", "inf"],
        ["--gaussian-weight", "nan"],
    ],  # fmt: skip
)
def test_dry_run_refuses_what_the_fit_refuses(option, capsys):
    code, out, err = run(["fit", "--dry-run", *option], capsys)
    assert code == 1 and "finite" in err and out == ""


def test_a_damaged_scores_file_on_resume_is_a_one_line_error(tmp_path, capsys):
    argv = ["benchmark", "heldout", "--dataset", "digits", "--classes", "1", "--seeds", "0"]
    argv += ["--quick", "--out", tmp_path, "-q"]
    assert run(argv, capsys)[0] == 0
    scores = tmp_path / "heldout-digits" / "scores.npz"
    scores.write_bytes(scores.read_bytes()[:100])
    code, _, err = run([*argv, "--resume"], capsys)
    assert code == 1 and "scores.npz is damaged" in err and "Traceback" not in err


def test_an_unexpected_error_is_still_one_json_object(csv, tmp_path, capsys, monkeypatch):
    import coreset_meg.anomaly.cli as cli

    def broken(*args, **kwargs):
        raise KeyError("something unforeseen")

    monkeypatch.setattr(cli, "load_user_data", broken)
    code, out, _ = run(["fit", csv, "--out", tmp_path / "m", "--json", *FAST], capsys)
    assert code == 1
    result = json.loads(out)
    assert result["exit_code"] == 1 and "something unforeseen" in result["error"]


def test_a_full_disk_while_checkpointing_names_the_checkpoint(csv, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    import torch

    def full(*args, **kwargs):
        try:
            raise OSError(28, "No space left on device")
        except OSError as err:  # torch chains the error under its own
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from err

    monkeypatch.setattr(torch, "save", full)
    argv = ["fit", csv, "--out", tmp_path / "m", "--checkpoint-every", "2", *FAST]
    code, _, err = run(argv, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert ".m.checkpoint.pt" in err and "cannot write the checkpoint" in err
    assert "no space left on device" in err


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_array_file_declaring_a_huge_array_is_refused(suffix, model, tmp_path, capsys):
    import io
    import zipfile

    header = io.BytesIO()
    fields = {"descr": "<f8", "fortran_order": False, "shape": (10**10, 4)}
    np.lib.format.write_array_header_1_0(header, fields)
    data = header.getvalue() + bytes(64)
    path = tmp_path / f"huge{suffix}"
    if suffix == ".npy":
        path.write_bytes(data)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("X.npy", data)
    assert path.stat().st_size < 400
    code, _, err = run(["fit", path, "--out", tmp_path / "m2", *FAST], capsys)
    assert code == 1 and "declares" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(["score", model, path, "--out", tmp_path / "s.csv", "-q"], capsys)
    assert code == 1 and "declares" in err and len(err.strip().splitlines()) == 1, err


def test_resume_with_other_data_of_the_same_shape_is_refused(csv, tmp_path, capsys,
                                                             monkeypatch):  # fmt: skip
    import torch

    import coreset_meg.anomaly.cli as cli

    def crash(*args, **kwargs):
        raise OSError("the machine went down before the save")

    argv = ["fit", csv, "--out", tmp_path / "m", "--checkpoint-every", "2", *FAST]
    with monkeypatch.context() as patch:
        patch.setattr(cli, "_save", crash)
        assert run(argv, capsys)[0] == 1
    checkpoint = tmp_path / ".m.checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["step"] = 2  # as if killed midway
    torch.save(state, checkpoint)
    other = tmp_path / "other.csv"
    frame = pd.read_csv(csv)
    (frame * 2 + 1).to_csv(other, index=False)
    code, _, err = run(["fit", other, "--out", tmp_path / "m", "--resume", *FAST], capsys)
    assert code == 1 and "other training data" in err and checkpoint.exists()
    code, _, err = run(["fit", csv, "--out", tmp_path / "m", "--resume", *FAST], capsys)
    assert code == 0, err


def test_default_fit_without_a_generator_is_saved(csv, tmp_path, capsys):
    """The default core-set energy trains nothing (no generator): its model is still saved."""
    out = tmp_path / "default"
    code, _, err = run(["fit", csv, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert (out / "weights.safetensors").is_file()
    code, _, err = run(["score", out, csv, "--out", tmp_path / "s.csv", "--quiet"], capsys)
    assert code == 0, err

"""Model files other tools read: safetensors weights, version checks, and the export round trip
(TorchScript always; ONNX where onnxruntime is installed)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from coreset_meg.anomaly import (
    ExportError,
    MEGDetector,
    ModelFileError,
    ModelVersionWarning,
    export_model,
    load_model,
    save_model,
)
from coreset_meg.anomaly.cli import app, main
from coreset_meg.anomaly.export import read_export_metadata
from coreset_meg.anomaly.persistence import flatten_weights, unflatten_weights, versions
from coreset_meg.gan import MEGConfig

TOL = 1e-5


@pytest.fixture(scope="module")
def vectors():
    """A fitted core-set detector (the default energy) on 3-D vectors, with 3 snapshots."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3)).astype(np.float32)
    training = MEGConfig.from_params(n_snapshots=3)
    det = MEGDetector(n_iter=6, training=training, random_state=0).fit(X)
    far = rng.normal(4.0, 1.0, size=(9, 3)).astype(np.float32)
    return det, np.vstack([X, far])


@pytest.fixture(scope="module")
def saved(vectors, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    save_model(vectors[0], folder)
    return folder


def torchscript_scores(path, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit's notice
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()


# ---------------------------------------------------------------------------------- model files
def test_model_folder_holds_safetensors_and_no_pickle(vectors, saved):
    det, X = vectors
    assert sorted(p.name for p in saved.iterdir()) == [
        "metrics.jsonl",
        "model.json",
        "weights.safetensors",
    ]
    head = (saved / "weights.safetensors").read_bytes()[:16]
    assert not head.startswith((b"PK", b"\x80"))  # neither torch's zip nor a pickle
    with safe_open(saved / "weights.safetensors", "pt") as f:
        assert f.metadata() == {"format": "coreset-meg-model", "format_version": "3"}
        keys = set(f.keys())
    assert {"energy_nets.0.centres", "energy_nets.2.log_weight", "generator.net.0.weight"} <= keys
    config = json.loads((saved / "model.json").read_text())
    assert config["format_version"] == 3
    assert config["weights_layout"]["energy_nets.2"] == "state_dict"
    loaded = load_model(saved)
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))


def test_format_2_folder_with_weights_pt_still_loads(vectors, tmp_path):
    det, X = vectors
    # What the format-2 writer left: torch.save of the nested weights, no weights_layout.
    state, weights = det.fitted_state()
    folder = tmp_path / "old"
    folder.mkdir()
    torch.save(weights, folder / "weights.pt")
    config = {"format": "coreset-meg-model", "format_version": 2, **state, "versions": versions()}
    (folder / "model.json").write_text(json.dumps(config))
    np.testing.assert_array_equal(load_model(folder).score_samples(X), det.score_samples(X))
    (folder / "weights.pt").unlink()
    with pytest.raises(ModelFileError, match="weights.pt is missing"):
        load_model(folder)


def test_the_format_document_describes_every_key(saved):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "model-format.md").read_text()
    config = json.loads((saved / "model.json").read_text())
    missing = [key for key in config if f"`{key}`" not in doc]
    assert not missing, f"docs/model-format.md does not describe {missing}"
    assert f"| {config['format_version']} |" in doc


def test_weights_flatten_and_unflatten_and_a_tampered_layout(tmp_path, saved):
    weights = {
        "nets": [{"a.b": torch.ones(2)}, {"a.b": torch.zeros(2)}],
        "g": {"w": torch.ones(1, 0)},
        "extra": {"scores": torch.arange(3.0), "empty": {}},
    }
    flat, layout = flatten_weights(weights)
    assert sorted(flat) == ["extra.scores", "g.w", "nets.0.a.b", "nets.1.a.b"]
    back = unflatten_weights(flat, json.loads(json.dumps(layout)))
    assert back["nets"][1]["a.b"].tolist() == [0.0, 0.0] and back["g"]["w"].shape == (1, 0)
    assert back["extra"]["empty"] == {} and back["extra"]["scores"].tolist() == [0, 1, 2]

    path = saved.parent / "tampered"
    path.mkdir()
    for name in ("model.json", "weights.safetensors", "metrics.jsonl"):
        (path / name).write_bytes((saved / name).read_bytes())
    config = json.loads((path / "model.json").read_text())
    del config["weights_layout"]["generator"]
    (path / "model.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="does not name: generator"):
        load_model(path)


def test_other_library_versions_load_with_a_warning(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelVersionWarning)
        load_model(saved)  # same versions: silent
    path = tmp_path / "m"
    path.mkdir()
    for name in ("model.json", "weights.safetensors", "metrics.jsonl"):
        (path / name).write_bytes((saved / name).read_bytes())
    config = json.loads((path / "model.json").read_text())
    config["versions"].update(torch="1.0.0", numpy="unknown")  # unknown: not compared
    (path / "model.json").write_text(json.dumps(config))
    with pytest.warns(ModelVersionWarning, match=r"torch 1\.0\.0 \(running ") as caught:
        load_model(path)
    assert len(caught) == 1 and "numpy" not in str(caught[0].message)
    assert torch.__version__ in str(caught[0].message)


# --------------------------------------------------------------------------------------- export
def test_torchscript_export_scores_as_the_vector_detector(vectors, tmp_path):
    det, X = vectors
    path = export_model(det, tmp_path / "model.pt")
    np.testing.assert_allclose(torchscript_scores(path, X), det.score_samples(X), rtol=0, atol=TOL)
    one = torchscript_scores(path, X[:1])  # another batch size than traced
    np.testing.assert_allclose(one, det.score_samples(X[:1]), rtol=0, atol=TOL)
    meta = read_export_metadata(path)
    assert meta["input"]["shape"] == ["N", 3] and meta["input"]["dtype"] == "float32"
    assert (
        meta["output"]["name"] == "score_samples"
        and "higher = more normal" in (meta["output"]["convention"])
    )
    assert meta["offset"] == det.offset_ and meta["versions"] == versions()


def test_torchscript_export_of_an_image_model_in_the_pixel_view(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, size=(40, 1, 8, 8)).astype(np.float32)
    det = MEGDetector(n_iter=5, view="pixels", random_state=0).fit(images)
    path = export_model(det, tmp_path / "images.pt")
    want = det.score_samples(images)
    np.testing.assert_allclose(torchscript_scores(path, images), want, rtol=0, atol=TOL)
    flat = torchscript_scores(path, images.reshape(40, -1))  # rows of 64 values work too
    np.testing.assert_allclose(flat, want, rtol=0, atol=TOL)
    assert read_export_metadata(path)["input"]["shape"] == ["N", 1, 8, 8]


def test_torchscript_export_of_the_features_and_both_views(tmp_path, monkeypatch):
    """The extractor's steps (resize, grey to RGB, normalisation) with a tiny network."""
    import coreset_meg.features.pretrained
    from coreset_meg.features.pretrained import FeatureEmbedder

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    tiny = FeatureEmbedder(network, name="tiny", weights_sha256="none", image_size=12,
                           mean=(120.0, 125.0, 130.0), std=60.0)  # fmt: skip
    monkeypatch.setattr(
        coreset_meg.features.pretrained, "make_embedder", lambda name, device="cpu": tiny
    )
    images = np.random.default_rng(2).integers(0, 256, size=(30, 1, 8, 8), dtype=np.uint8)
    as_float = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    for view in ("features", "both"):  # both: pixels and unit-length features, each scaled
        det = MEGDetector(n_iter=5, view=view, features="tiny", random_state=0).fit(images)
        assert det.network_shape_ == ((4,) if view == "features" else (64 + 4,))
        path = export_model(det, tmp_path / f"{view}.pt")
        got = torchscript_scores(path, as_float)
        np.testing.assert_allclose(got, det.score_samples(images), rtol=0, atol=TOL)
        assert read_export_metadata(path)["view"] == view


@pytest.mark.slow
def test_torchscript_export_with_efficientnet_features(tmp_path):
    images = np.random.default_rng(3).uniform(-1, 1, size=(24, 3, 8, 8)).astype(np.float32)
    det = MEGDetector(n_iter=3, features="efficientnet-lite0@32", random_state=0).fit(images)
    assert det.view_ == "features"
    path = export_model(det, tmp_path / "lite0.pt")
    got = torchscript_scores(path, images)
    np.testing.assert_allclose(got, det.score_samples(images), rtol=TOL, atol=TOL)


def test_what_cannot_be_exported_is_refused_in_one_line(vectors, tmp_path, monkeypatch):
    det, X = vectors
    grad = MEGDetector(n_iter=3, score_type="gradnorm", random_state=0).fit(X[:60])
    with pytest.raises(ExportError, match="score_type='gradnorm'"):
        export_model(grad, tmp_path / "g.pt")
    with pytest.raises(ExportError, match="torchscript, onnx"):
        export_model(det, tmp_path / "x.tf", format="tensorflow")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(ExportError, match=r"coreset-meg\[onnx\]"):
        export_model(det, tmp_path / "x.onnx", format="onnx")
    assert not any(tmp_path.iterdir())


def test_a_file_that_does_not_score_as_the_detector_is_not_written(vectors, tmp_path, monkeypatch):
    import coreset_meg.anomaly.export

    det, _ = vectors
    monkeypatch.setattr(
        coreset_meg.anomaly.export, "_reference_scores", lambda d, e, X: np.zeros(len(X))
    )
    with pytest.raises(ExportError, match="does not score as the detector"):
        export_model(det, tmp_path / "m.pt")
    assert not any(tmp_path.iterdir())  # no file, no temporary left


def test_onnx_export_scores_as_the_detector(vectors, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    det, X = vectors
    path = export_model(det, tmp_path / "model.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": X})
    np.testing.assert_allclose(got, det.score_samples(X), rtol=0, atol=TOL)
    meta = read_export_metadata(path)
    assert meta["file_format"] == "onnx" and meta["input"]["shape"] == ["N", 3]


# ------------------------------------------------------------------------------------------ CLI
def test_anomaly_export_command(saved, vectors, tmp_path, capsys):
    _, X = vectors
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(app, ["export", str(saved), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["input_shape"] == ["N", 3]
    want = load_model(saved).score_samples(X)
    np.testing.assert_allclose(torchscript_scores(out, X), want, rtol=0, atol=TOL)

    for bad, message in [
        (saved, "is not a file"),  # the model folder itself
        (saved / "model.json", "inside the model folder"),
        (saved / "new.pt", "inside the model folder"),
        (tmp_path, "is not a file"),
    ]:
        assert main(["export", str(saved), "--out", str(bad)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in saved.iterdir())[-1] == "weights.safetensors"
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "not found" in capsys.readouterr().err

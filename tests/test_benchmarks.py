"""Smoke tests of the benchmark suite (quick mode) and checks of its tables and verdicts."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from coreset_meg.anomaly import MEGDetector
from coreset_meg.anomaly.benchmarks import (
    BENCHMARKS,
    DETECTORS,
    outlier_detector,
    protocols,
    run_cost,
    run_heldout,
    run_mixture,
    run_one_class,
)
from coreset_meg.anomaly.benchmarks._grid import Cell, run_grid
from coreset_meg.anomaly.benchmarks._io import fmt_mean_std, write_meta
from coreset_meg.anomaly.benchmarks._reports import (
    PUBLISHED_HELDOUT_AUPRC,
    PUBLISHED_NOTE,
    heldout_report,
)
from coreset_meg.anomaly.benchmarks.detectors import KNNDistance, anomaly_score, view_of
from coreset_meg.anomaly.benchmarks.mixture import MIXTURE_SETTINGS
from coreset_meg.anomaly.benchmarks.protocols import COLUMNS, subsample
from coreset_meg.anomaly.preprocessing import FeatureTransformer
from coreset_meg.anomaly.settings import detector_params as to_detector
from coreset_meg.anomaly.settings import family
from coreset_meg.anomaly.settings import preset as detector_params
from coreset_meg.datasets import DataError, load_benchmark

METRICS = ["auroc", "auprc", "average_precision"]
METHODS = list(DETECTORS)
# The digits are not images: the feature-view detectors sit out their runs.
PIXEL_METHODS = [m for m, f in DETECTORS.items() if view_of(f) == "pixels"]


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("heldout")
    text = run_heldout(dataset="digits", classes=[1], seeds=[0], quick=True, out_dir=out)
    return out, text


# ------------------------------------------------------------------------------ entry points


def test_entry_points_share_the_options():
    assert set(BENCHMARKS) == {"heldout", "heldout-published", "one-class", "mixture", "cost"}
    common = {"classes", "seeds", "device", "quick", "data_root", "out_dir", "verbose"}
    for name, fn in BENCHMARKS.items():
        params = set(inspect.signature(fn).parameters)
        assert common <= params, name
    assert "dataset" in inspect.signature(run_heldout).parameters
    assert "dataset" in inspect.signature(run_one_class).parameters
    assert "sides" in inspect.signature(run_mixture).parameters


def test_detector_params_one_set_per_family():
    assert family("mnist") == family("cifar10") == "images"
    assert family("digits") == "vectors" and family("features") == "features"
    full, quick = detector_params("mnist"), detector_params("mnist", quick=True)
    assert quick["n_iter"] == 5 and quick["width"] == 8
    assert {k: v for k, v in full.items() if k not in ("n_iter", "width")} == {
        k: v for k, v in quick.items() if k not in ("n_iter", "width")
    }
    # Every family scores with the core-set energy; features given as vectors are scaled to
    # unit length as the detector's own feature view scales them.
    images, vectors = MEGDetector(**to_detector(full)), MEGDetector(**detector_params("digits"))
    assert images.network == vectors.network == "coreset"
    assert images.view == "auto" and detector_params("features")["scaling"] == "l2"
    detector_params("mnist")["n_iter"] = 1  # callers get a fresh dict
    assert detector_params("mnist") == full


def test_fmt_mean_std():
    assert fmt_mean_std([0.5, 0.7]) == "0.600 ± 0.141"
    assert fmt_mean_std([0.25]) == "0.250"
    assert fmt_mean_std([np.nan, 0.25]) == "0.250"
    assert fmt_mean_std([]) == "–"


def test_quick_subsample_keeps_both_labels():
    split = load_benchmark("digits", "heldout", 3, random_state=0)
    small = subsample(split, seed=0, n_train=100, n_test=50)
    assert len(small.X_train) == 100 and len(small.X_test) == 50
    assert set(np.unique(small.y_test)) == {0, 1}
    assert np.isin(small.train_index, split.train_index).all()
    assert not np.isin(small.test_index, small.train_index).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": []}, "seeds must not be empty"),
        ({"seeds": [0, 0]}, "must not repeat"),
        ({"classes": ["x"]}, "classes must be integers"),
    ],
)
def test_bad_list_options_fail_before_any_work(tmp_path, kwargs, message):
    options = {"dataset": "digits", "classes": [1], "seeds": [0], "quick": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_heldout(out_dir=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="sides must be >= 1"):
        run_mixture(sides=[0], seeds=[0], quick=True, out_dir=tmp_path / "out")


# ---------------------------------------------------------------------------- held-out


def test_heldout_quick_writes_everything(heldout_run):
    out, text = heldout_run
    for name in [
        "results.csv",
        "table.md",
        "meta.json",
        "pr_curves.png",
        "auprc_bars.png",
        "scores.npz",
        "training_history.csv",
    ]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "table.md").read_text(encoding="utf-8") == text
    assert not list(out.glob(".*")), "temporary files left behind"


def test_heldout_quick_csv(heldout_run):
    out, _ = heldout_run
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == list(COLUMNS)
    assert len(results) == len(PIXEL_METHODS)  # one row per method x class x seed
    assert set(results["method"]) == set(PIXEL_METHODS)
    assert (results["cls"] == 1).all() and (results["seed"] == 0).all()
    values = results[METRICS].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    gan = results[results["method"].str.startswith("MEG")]
    assert (gan["iters_per_second"] > 0).all()
    assert (gan["selection_share"].between(0, 1)).all()
    assert (gan["selection_seconds"] > 0).all()
    assert results["embedding_seconds"].isna().all()  # no feature view on the digits
    assert results["n_train"].max() <= 600 and results["n_test"].max() <= 400


def test_meta_sums_the_sittings_of_a_resumed_run(tmp_path):
    def sitting(seconds: float, resume: bool) -> dict:
        write_meta(tmp_path, "x", {"resume": resume}, started=time.time() - seconds, device="cpu")
        return json.loads((tmp_path / "meta.json").read_text())

    first = sitting(100, resume=False)
    assert first["sittings_wall_seconds"] == [first["wall_seconds"]]
    second = sitting(50, resume=True)
    assert len(second["sittings_wall_seconds"]) == 2
    assert second["total_wall_seconds"] == pytest.approx(150, abs=5)
    # A run that does not resume starts the count again.
    fresh = sitting(10, resume=False)
    assert fresh["total_wall_seconds"] == pytest.approx(10, abs=5)
    # A corrupt earlier meta.json is not fatal: the count starts from this sitting.
    (tmp_path / "meta.json").write_text("{not json")
    assert sitting(20, resume=True)["sittings_wall_seconds"] == [pytest.approx(20, abs=5)]


def test_heldout_quick_table(heldout_run):
    out, text = heldout_run
    for method in PIXEL_METHODS:
        assert method in text
    assert "Quick mode" in text
    assert "## Targets" in text
    # Digits are not MNIST: the published comparisons are not measured.
    assert "not measured (published figures are for MNIST" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"]["classes"] == [1]
    assert meta["machine"]["cpu_count"] >= 1
    assert meta["detector"]["n_iter"] == 5
    # The report is a function of the CSV alone.
    again = heldout_report(
        pd.read_csv(out / "results.csv"), dataset="digits", params=meta["detector"], quick=True
    )
    assert again == text


def _fake_results(values: dict[str, float], classes=range(10), seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for cls in classes:
        for seed in seeds:
            for method in METHODS:
                v = values[method] + 0.01 * seed
                rows.append({"method": method, "cls": cls, "seed": seed, "auprc": v})
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = 0.5 if column in METRICS else 1.0
    frame["anomaly_fraction"] = 0.35
    return frame[list(COLUMNS)]


def test_heldout_scores_saved_per_split(heldout_run):
    out, _ = heldout_run
    results = pd.read_csv(out / "results.csv")
    with np.load(out / "scores.npz") as arrays:
        y = arrays["1/0/y_test"]
        knn = arrays["1/0/knn_distance"]
    row = results[results["method"] == "kNN distance"].iloc[0]
    assert len(y) == len(knn) == row["n_test"]
    assert roc_auc_score(y, knn) == pytest.approx(row["auroc"], abs=1e-6)


def test_parallel_jobs_give_the_same_numbers(tmp_path, heldout_run):
    out, _ = heldout_run
    serial = pd.read_csv(out / "results.csv")
    run_heldout(dataset="digits", classes=[1, 2], seeds=[0], quick=True, out_dir=tmp_path, jobs=2)
    parallel = pd.read_csv(tmp_path / "results.csv")
    assert sorted(parallel["cls"].unique()) == [1, 2]  # rows in class order
    assert list(parallel["cls"]) == sorted(parallel["cls"])
    ones = parallel[parallel["cls"] == 1].reset_index(drop=True)
    assert list(ones["method"]) == list(serial["method"])
    np.testing.assert_allclose(ones[METRICS], serial[METRICS], atol=1e-6)


def test_parallel_jobs_raise_the_worker_error(tmp_path):
    with pytest.raises(DataError, match="unknown class 99"):
        run_heldout(
            dataset="digits", classes=[99, 1], seeds=[0], quick=True, out_dir=tmp_path, jobs=2
        )
    assert not (tmp_path / "table.md").exists()


def test_resume_measures_only_the_missing_splits(tmp_path, monkeypatch):
    options = {"dataset": "digits", "seeds": [0], "quick": True, "out_dir": tmp_path}
    run_heldout(classes=[1], **options)
    first = pd.read_csv(tmp_path / "results.csv")
    measured = []
    real = protocols.score_split

    def counting(split, *args):
        measured.append(split.description)
        return real(split, *args)

    monkeypatch.setattr(protocols, "score_split", counting)
    text = run_heldout(classes=[1, 3], resume=True, **options)
    assert len(measured) == 1 and "3" in measured[0]  # class 1 was kept, not re-measured
    both = pd.read_csv(tmp_path / "results.csv")
    assert sorted(both["cls"].unique()) == [1, 3]
    pd.testing.assert_frame_equal(both[both["cls"] == 1].reset_index(drop=True), first)
    assert "| 3 |" in text and "| 1 |" in text


KNN1 = outlier_detector(KNNDistance, k=1)


def test_resume_measures_only_a_detector_added_since(tmp_path, monkeypatch):
    """A detector added to the registry after a run: resuming measures its column alone on the
    kept splits, and every other row and score stays as it was."""
    options = dict(dataset="digits", classes=[1], seeds=[0], quick=True, out_dir=tmp_path)
    fewer = {k: f for k, f in DETECTORS.items() if k != "Isolation Forest"}
    monkeypatch.setattr(protocols, "DETECTORS", fewer)
    run_heldout(**options)
    first = pd.read_csv(tmp_path / "results.csv")
    with np.load(tmp_path / "scores.npz") as arrays:
        kept = {k: arrays[k] for k in arrays.files}
    monkeypatch.undo()
    measured = []
    real = protocols.score_split

    def counting(split, seed, dataset, device, quick, detectors, features=None):
        measured.append(list(detectors))
        return real(split, seed, dataset, device, quick, detectors, features)

    monkeypatch.setattr(protocols, "score_split", counting)
    history = pd.read_csv(tmp_path / "training_history.csv")
    text = run_heldout(resume=True, **options)
    assert measured == [["Isolation Forest"]]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "training_history.csv"), history)
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["method"]) == PIXEL_METHODS  # in registry order
    old = results[results["method"] != "Isolation Forest"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first)
    with np.load(tmp_path / "scores.npz") as arrays:
        assert "1/0/isolation_forest" in arrays.files
        for key, value in kept.items():
            np.testing.assert_array_equal(arrays[key], value)
    assert "| Isolation Forest |" in text
    # A kept split lacking a detector stays as it is when its class is not asked for again, and
    # stays on disk while a resumed run that would complete it is interrupted.
    monkeypatch.setattr(protocols, "DETECTORS", {**DETECTORS, "kNN, k=1": KNN1})
    run_heldout(**{**options, "classes": [3]}, resume=True)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.loc[results["cls"] == 1, "method"]) == set(PIXEL_METHODS)
    assert set(results.loc[results["cls"] == 3, "method"]) == {*PIXEL_METHODS, "kNN, k=1"}

    def broken(split, *args):  # class 5 is measured, then the run stops on class 1
        if "class 1" in split.description:
            raise KeyboardInterrupt
        return real(split, *args)

    monkeypatch.setattr(protocols, "score_split", broken)
    with pytest.raises(KeyboardInterrupt):
        run_heldout(**{**options, "classes": [5, 1]}, resume=True)
    interrupted = pd.read_csv(tmp_path / "results.csv")
    assert set(interrupted["cls"]) == {1, 3, 5}
    by_class = ["cls", "method"]
    pd.testing.assert_frame_equal(
        interrupted[interrupted["cls"] != 5].sort_values(by_class).reset_index(drop=True),
        results.sort_values(by_class).reset_index(drop=True),
    )
    results = interrupted
    # A detector dropped from the registry: its kept rows stay.
    monkeypatch.setattr(protocols, "score_split", real)
    monkeypatch.setattr(protocols, "DETECTORS", fewer)
    run_heldout(**{**options, "classes": [3]}, resume=True)
    after = pd.read_csv(tmp_path / "results.csv")
    assert "Isolation Forest" in set(after.loc[after["cls"] == 3, "method"])
    assert len(after) == len(results)


def test_resume_keeps_splits_not_asked_for_again(tmp_path):
    options = {"dataset": "digits", "seeds": [0], "quick": True, "out_dir": tmp_path}
    run_heldout(classes=[1], **options)
    first = pd.read_csv(tmp_path / "results.csv")
    text = run_heldout(classes=[3], resume=True, **options)
    both = pd.read_csv(tmp_path / "results.csv")
    assert list(both["cls"].unique()) == [3, 1]  # asked-for classes first, then the kept ones
    pd.testing.assert_frame_equal(both[both["cls"] == 1].reset_index(drop=True), first)
    with np.load(tmp_path / "scores.npz") as arrays:
        assert {"1/0/y_test", "3/0/y_test"} <= set(arrays.files)
    assert "| 1 |" in text and "| 3 |" in text


def test_resume_refuses_other_settings(tmp_path):
    options = {"dataset": "digits", "classes": [1], "seeds": [0], "quick": True}
    run_heldout(out_dir=tmp_path, **options)
    settings = json.loads((tmp_path / "settings.json").read_text())
    settings["detector"]["n_iter"] += 1
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    before = (tmp_path / "results.csv").read_bytes()
    with pytest.raises(ValueError, match="cannot resume.*other settings"):
        run_heldout(out_dir=tmp_path, resume=True, **options)
    assert (tmp_path / "results.csv").read_bytes() == before


def test_heldout_targets_from_measured_numbers():
    # Above published MEG on every digit; the feature view below kNN on unit-length features and
    # above the other two baselines; the pixel view above its kNN.
    values = dict.fromkeys(METHODS, 0.3)
    values.update(
        {
            "MEG core-set energy (features)": 0.52,
            "kNN distance (features)": 0.40,
            "kNN distance, unit length (features)": 0.70,
            "Gaussian (features)": 0.52,
            "MEG core-set energy (pixels)": 0.45,
            "kNN distance": 0.44,
            "MEG core-set energy (both views)": 0.60,
            "kNN distance (both views)": 0.62,
        }
    )
    text = heldout_report(_fake_results(values), dataset="mnist")
    for digit in (1, 4, 5, 7, 9):
        assert f"digit {digit}: MEG core-set energy (features) AUPRC > published MEG" in text
    assert text.count("published MEG") == 5
    lines = [line for line in text.splitlines() if line.startswith("- ")]

    def verdict(start: str) -> str:
        (line,) = [line for line in lines if line.startswith(start)]
        return line.split(": ")[-1]

    ours = "- mean AUPRC: MEG core-set energy (features) >= "
    assert verdict("- digit 1:") == "MET (0.525 ± 0.007 vs 0.281)"
    assert verdict(ours + "kNN distance (features)").startswith("MET (0.525 ± 0.007 vs 0.405")
    assert verdict(ours + "kNN distance, unit").startswith("NOT MET (0.525 ± 0.007 vs 0.705")
    assert verdict(ours + "Gaussian").startswith("MET (0.525")  # ties count
    pixels = "- mean AUPRC: MEG core-set energy (pixels) >= kNN distance"
    assert verdict(pixels).startswith("MET (0.455 ± 0.007 vs 0.445")
    # The both view against kNN on its own vectors and on each of its parts.
    both = "- mean AUPRC: MEG core-set energy (both views) >= "
    assert verdict(both + "kNN distance (both views)").startswith("NOT MET (0.605 ± 0.007 vs 0.625")
    assert verdict(both + "kNN distance, unit").startswith("NOT MET (0.605 ± 0.007 vs 0.705")
    assert verdict(both + "kNN distance:").startswith("MET (0.605 ± 0.007 vs 0.445")
    # Published columns are there and marked; the subset mean row appears.
    for name in PUBLISHED_HELDOUT_AUPRC:
        assert f"{name} ({PUBLISHED_NOTE})" in text
    assert "mean over digits 1, 4, 5, 7, 9" in text


def test_heldout_targets_not_measured_for_missing_digits():
    values = dict.fromkeys(METHODS, 0.5)
    text = heldout_report(_fake_results(values, classes=[4]), dataset="mnist")
    assert "digit 1 not run" in text
    assert "MET (0.505 ± 0.007 vs 0.401)" in text
    assert "not measured (1 of 10 classes run" in text


# --------------------------------------------------------------------------- one-class


def test_one_class_quick(tmp_path):
    text = run_one_class(dataset="digits", classes=[0], seeds=[0], quick=True, out_dir=tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == len(PIXEL_METHODS) and set(results["method"]) == set(PIXEL_METHODS)
    values = results[METRICS].to_numpy()
    assert (values >= 0).all() and (values <= 1).all()
    for name in ["table.md", "meta.json", "roc_curves.png", "auroc_bars.png"]:
        assert (tmp_path / name).is_file(), name
    assert "## AUROC" in text and all(m in text for m in PIXEL_METHODS)
    assert "- mean AUROC: MEG core-set energy (pixels) >= kNN distance: not measured" in text


# ----------------------------------------------------------------------------- mixture


def test_mixture_quick(tmp_path):
    text = run_mixture(sides=[3], seeds=[0], quick=True, out_dir=tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == len(MIXTURE_SETTINGS)
    assert set(results["setting"]) == {s.name for s in MIXTURE_SETTINGS}
    assert (results["n_modes"] == 9).all()
    assert results["modes_recovered"].between(0, 9).all()
    for column in ["recovered_fraction", "high_quality_fraction", "selection_share"]:
        assert results[column].between(0, 1).all(), column
    assert (results["seconds_per_step"] > 0).all()
    for name in ["table.md", "meta.json", "samples.png", "samples.npz"]:
        assert (tmp_path / name).is_file(), name
    for setting in MIXTURE_SETTINGS:
        assert setting.name in text


def test_mixture_resume_adds_seeds_and_keeps_rows(tmp_path, monkeypatch):
    import coreset_meg.anomaly.benchmarks.mixture as mixture_module

    run_mixture(sides=[3], seeds=[1], quick=True, out_dir=tmp_path)
    first = pd.read_csv(tmp_path / "results.csv")
    trained = []
    real_train = mixture_module.train_setting
    monkeypatch.setattr(
        mixture_module,
        "train_setting",
        lambda X, setting, config, *, seed, device: (
            trained.append((setting.name, seed))
            or real_train(X, setting, config, seed=seed, device=device)
        ),
    )
    text = run_mixture(sides=[3], seeds=[0, 1], quick=True, out_dir=tmp_path, resume=True)

    assert trained == [(s.name, 0) for s in MIXTURE_SETTINGS]  # seed 1 was not trained again
    results = pd.read_csv(tmp_path / "results.csv")
    assert sorted(results["seed"]) == sorted([0, 1] * len(MIXTURE_SETTINGS))
    kept = results[results["seed"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, first)
    assert "seeds 0, 1" in text
    with np.load(tmp_path / "samples.npz") as arrays:  # the plot shows the lowest seed
        assert sorted(arrays.files) == sorted(f"3/{s.name}/0" for s in MIXTURE_SETTINGS)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta["sittings_wall_seconds"]) == 2


def test_mixture_resume_refuses_other_settings(tmp_path):
    run_mixture(sides=[3], seeds=[0], quick=True, out_dir=tmp_path)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="cannot resume"):
        run_mixture(sides=[3], seeds=[0, 1], quick=False, out_dir=tmp_path, resume=True)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot resume"):
        run_mixture(sides=[3], seeds=[0], quick=True, out_dir=tmp_path, resume=True)
    assert (tmp_path / "results.csv").read_bytes() == before["results.csv"]


def test_mixture_resumes_an_interrupted_run(tmp_path, monkeypatch):
    import coreset_meg.anomaly.benchmarks.mixture as mixture_module

    run_mixture(sides=[3], seeds=[0], quick=True, out_dir=tmp_path)
    for name in ("meta.json", "table.md", "samples.png", "samples.npz"):  # stopped mid-run
        (tmp_path / name).unlink()
    monkeypatch.setattr(mixture_module, "train_setting", None)  # nothing may be trained
    text = run_mixture(sides=[3], seeds=[0], quick=True, out_dir=tmp_path, resume=True)
    assert all(setting.name in text for setting in MIXTURE_SETTINGS)
    assert (tmp_path / "meta.json").is_file() and (tmp_path / "samples.png").is_file()


def test_mixture_keeps_the_samples_of_the_cells_finished_before_an_interruption(
    tmp_path, monkeypatch
):
    import coreset_meg.anomaly.benchmarks.mixture as mixture_module

    names = [s.name for s in MIXTURE_SETTINGS[:2]]
    real_train, trained = mixture_module.train_setting, []

    def train_once(X, setting, config, *, seed, device):
        if trained:
            raise KeyboardInterrupt  # stopped during the second cell
        trained.append(setting.name)
        return real_train(X, setting, config, seed=seed, device=device)

    monkeypatch.setattr(mixture_module, "train_setting", train_once)
    with pytest.raises(KeyboardInterrupt):
        run_mixture(sides=[3], seeds=[0], settings=names, quick=True, out_dir=tmp_path)
    with np.load(tmp_path / "samples.npz") as arrays:
        assert arrays.files == [f"3/{names[0]}/0"]
        first = arrays[f"3/{names[0]}/0"]
    monkeypatch.setattr(mixture_module, "train_setting", real_train)
    run_mixture(sides=[3], seeds=[0], settings=names, quick=True, out_dir=tmp_path, resume=True)
    with np.load(tmp_path / "samples.npz") as arrays:  # the kept cell's samples are plotted
        assert sorted(arrays.files) == sorted(f"3/{name}/0" for name in names)
        np.testing.assert_array_equal(arrays[f"3/{names[0]}/0"], first)


# -------------------------------------------------------------------------------- cost


def test_cost_quick(tmp_path):
    text = run_cost(seeds=[0], quick=True, out_dir=tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 4  # 2 kinds of data x 2 settings x 1 seed
    assert (results["ms_per_step"] > 0).all()
    assert results["selection_share"].between(0, 1).all()
    random = results[results["setting"] == "random batches"]
    coreset = results[results["setting"] == "core-set"]
    assert (random["selection_ms_per_step"] == 0).all()
    assert (coreset["selection_ms_per_step"] > 0).all()
    for name in ["table.md", "meta.json", "step_time.png"]:
        assert (tmp_path / name).is_file(), name
    assert "overhead vs random %" in text and "(baseline)" in text


def _energy_settings_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_energy_settings.py"
    spec = importlib.util.spec_from_file_location("bench_energy_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_energy_settings_rescore_adds_combinations_from_saved_scores(tmp_path):
    bench = _energy_settings_script()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50).astype(np.int8)
    z = rng.normal(size=(100, 3, 2)).astype(np.float32)
    z[y == 1, :, 0] += 2.0  # anomalies: higher energy, flatter (lower gradient norm)
    z[y == 1, :, 1] -= 2.0
    keys = ("one-class", 3, 10, "core-set latents (4,1)")
    np.savez_compressed(bench.scores_path(tmp_path, *keys), z=z, y=y)
    old = pd.DataFrame(
        [
            dict(zip(("protocol", "cls", "seed", "setting"), keys, strict=True)) | {"score": s}
            for s in ("energy", "gradnorm", "energy+gradnorm")
        ]
        + [{"protocol": "one-class", "cls": 5, "seed": 10, "setting": keys[3], "score": "energy"}]
    ).assign(auprc=0.5, auroc=0.5, fit_seconds=[7.0, 7.0, 7.0, 9.0])

    new = bench.rescore(old, tmp_path)

    fit = new[new["cls"] == 3].set_index("score")
    assert list(fit.index) == list(bench.COMBINATIONS)
    assert (fit["fit_seconds"] == 7.0).all()
    e, g = z.astype(np.float64).mean(axis=1).T
    assert fit.loc["max(energy, gradnorm)", "auroc"] == pytest.approx(
        roc_auc_score(y, np.maximum(e, g))
    )
    assert fit.loc["gradnorm", "auroc"] < 0.5 < fit.loc["energy+|gradnorm|", "auroc"]
    # a fit without saved scores keeps its rows
    assert new[new["cls"] == 5].to_dict("records") == old[old["cls"] == 5].to_dict("records")


# ---------------------------------------------------------------------- detector registry


@pytest.mark.parametrize("name", ["kNN distance", "Isolation Forest", "PCA reconstruction"])
def test_baselines_follow_the_sklearn_convention(name):
    # Two obvious outliers beside a cluster score lowest (score_samples: higher = more normal).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2, 3)).astype(np.float32)  # any shape: flattened to rows
    X_test = np.concatenate([X[:20], np.full((2, 2, 3), 8.0, dtype=np.float32)])
    detector = DETECTORS[name]("digits", 0, "cpu", True).fit(X)
    normal = detector.score_samples(X_test)
    assert normal.shape == (22,) and set(np.argsort(normal)[:2]) == {20, 21}
    np.testing.assert_array_equal(anomaly_score(detector, X_test), -normal)


def test_a_registered_detector_becomes_a_column(tmp_path, monkeypatch):
    from sklearn.covariance import EllipticEnvelope
    from sklearn.neighbors import LocalOutlierFactor

    monkeypatch.setitem(DETECTORS, "LOF", outlier_detector(LocalOutlierFactor, novelty=True))
    monkeypatch.setitem(DETECTORS, "Elliptic", outlier_detector(EllipticEnvelope))
    monkeypatch.delitem(DETECTORS, "Isolation Forest")  # registry entries come and go
    text = run_heldout(dataset="digits", classes=[1], seeds=[0], quick=True, out_dir=tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["method"]) == [m for m in DETECTORS if view_of(DETECTORS[m]) == "pixels"]
    assert results.loc[results["method"] == "LOF", "auroc"].between(0, 1).all()
    header = next(line for line in text.splitlines() if line.startswith("| class |"))
    assert "| LOF |" in header and "| Elliptic |" in header and "Isolation" not in header
    with np.load(tmp_path / "scores.npz") as arrays:
        assert {"1/0/lof", "1/0/elliptic"} <= set(arrays.files)


# --------------------------------------------------------------------------- grid runner


def test_grid_runner_resumes_only_the_missing_cells(tmp_path):
    measured = []

    def measure(a, b):
        measured.append((a, b))
        return Cell((a, b), [{"a": a, "b": b, "value": a * 10 + b / 3}])

    settings = {"what": 1}
    axes = {"a": [1, 2], "b": [0]}
    run_grid(tmp_path, settings, axes, measure, columns=("a", "b", "value"))
    before = (tmp_path / "results.csv").read_bytes()
    asked = {"a": [3, 1], "b": [0]}
    cells = run_grid(tmp_path, settings, asked, measure, columns=("a", "b", "value"), resume=True)
    assert measured == [(1, 0), (2, 0), (3, 0)]  # (1, 0) and (2, 0) were kept
    assert [c.key for c in cells] == [(3, 0), (1, 0), (2, 0)]  # asked first, then kept
    lines = (tmp_path / "results.csv").read_bytes().splitlines()
    kept = before.splitlines()
    assert lines[0] == kept[0] and set(kept[1:]) <= set(lines)  # kept rows byte for byte
    with pytest.raises(ValueError, match="^cannot resume: .* other settings"):
        run_grid(tmp_path, {"what": 2}, axes, measure, columns=("a", "b", "value"), resume=True)


def _views(detectors):
    return {name: view_of(factory) for name, factory in detectors.items()}


def test_views_reach_spawned_workers():
    """The benchmarks measure splits in spawned processes (``jobs > 1``): each factory's view
    must survive the trip (an attribute set on a ``functools.partial`` did not)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        seen = pool.submit(_views, dict(DETECTORS)).result()
    assert seen == _views(DETECTORS)
    assert {"features", "pixels", "both"} <= set(seen.values())


def test_both_view_detectors_see_pixels_and_features_side_by_side(monkeypatch):
    """The benchmarks' both view: the pixels in [-1, 1] then the features, the features at unit
    length, each part divided by sqrt(median nearest-neighbour squared distance); kNN on them
    is kNN on those vectors, and the MEG detector scores as ``MEGDetector(view="both")``."""
    import torch

    from coreset_meg.anomaly.benchmarks.detectors import BothViews, joined_views
    from coreset_meg.gan.trainer import nearest_neighbour_sq_distance

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(70, 6, 6), dtype=np.uint8)
    feats = rng.normal(size=(70, 5)).astype(np.float32) * 40
    split = load_benchmark("digits", "heldout", 1)
    split = replace(split, X_train=images[:50], X_test=images[50:], y_test=np.arange(20) % 2)
    features = replace(split, X_train=feats[:50], X_test=feats[50:])
    names = ["kNN distance (both views)", "MEG core-set energy (both views)"]
    detectors = {name: DETECTORS[name] for name in names}
    out = protocols.score_split(split, 0, "mnist", "cpu", True, detectors, features)

    pixels = images.reshape(70, -1) / np.float32(127.5) - 1
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    scales = [
        np.sqrt(nearest_neighbour_sq_distance(torch.from_numpy(np.ascontiguousarray(p[:50]))))
        for p in (pixels, unit)
    ]
    vectors = np.concatenate([pixels / scales[0], unit / scales[1]], axis=1).astype(np.float32)
    want = -KNNDistance(k=5).fit(vectors[:50]).score_samples(vectors[50:])
    np.testing.assert_allclose(out[names[0]][0], want, rtol=1e-4)
    meg, figures = out[names[1]][2], out[names[1]][1]
    assert isinstance(meg, BothViews) and meg.detector_.network_shape_ == (36 + 5,)
    assert figures["n_iter"] == 5 and figures["iters_per_second"] > 0  # the wrapped MEG's
    np.testing.assert_allclose(meg.spread_[[0, -1]], scales, rtol=1e-5)
    # The detector's own both view on the images, given the same features, scores the same.
    monkeypatch.setattr(
        FeatureTransformer, "embed", lambda self, X: feats[:50] if len(X) == 50 else feats[50:]
    )
    settings = {**detector_params("mnist", quick=True), "view": "both", "random_state": 0}
    own = MEGDetector(**to_detector(settings))
    own.fit(images[:50, None])
    np.testing.assert_allclose(
        out[names[1]][0], -own.score_samples(images[50:, None]), rtol=1e-4, atol=1e-4
    )
    floats = images / np.float32(127.5) - np.float32(1.0)
    np.testing.assert_allclose(joined_views(floats, feats), joined_views(images, feats), atol=1e-6)
    with pytest.raises(ValueError, match="n_pixels must split the columns"):
        BothViews(KNNDistance()).fit(vectors)


def test_published_heldout_split_leaks_training_samples_into_the_test_set():
    """The published loaders' draw: most normal test samples are training samples, the same
    for every seed; the leak-free split has none, and both hold every anomaly in the test."""
    from coreset_meg.datasets import heldout_split, load_benchmark, published_heldout_split

    y = np.repeat(np.arange(10), 50)
    X = np.arange(len(y), dtype=np.float32)[:, None]
    leaky = published_heldout_split(X, y, 3)
    clean = heldout_split(X, y, 3, random_state=0)
    for split in (leaky, clean):
        assert len(split.train_index) == 360 and (y[split.train_index] != 3).all()
        assert set(np.flatnonzero(y == 3)) <= set(split.test_index)
    normal_test = leaky.test_index[leaky.y_test == 0]
    assert len(normal_test) == 90
    assert 0.6 < np.isin(normal_test, leaky.train_index).mean() < 0.95  # about 80%
    assert not np.isin(clean.test_index, clean.train_index).any()
    np.testing.assert_array_equal(published_heldout_split(X, y, 3).test_index, leaky.test_index)
    split = load_benchmark("digits", "heldout-published", 0, random_state=5)
    assert "leaky" in split.description and "training samples" in split.description


def test_feature_view_of_the_published_split_takes_the_rows_of_its_pool(monkeypatch):
    """The published split indexes the pool in its loaders' order; its features must be those
    of the same images in the official order (training images first)."""
    from coreset_meg.anomaly.benchmarks import features as fv
    from coreset_meg.datasets import Split
    from coreset_meg.datasets.splits import published_pool

    n_train, n_test = 7000, 50
    official = np.arange(n_train + n_test, dtype=np.float32)[:, None]  # row i's feature is i
    monkeypatch.setattr(fv, "dataset_features", lambda *a, **k: (official, 0.0, n_train))
    pool = official[published_pool(n_train, n_test)]  # the images as the loaders order them
    train, test = np.array([0, 1, 6990]), np.array([2, 6995, 7049])
    split = Split(pool[train], pool[test], np.zeros(3, int), train, test, "")
    got, _ = fv.FeatureView("x")(split, "mnist", "heldout-published", None)
    np.testing.assert_array_equal(got.X_train, pool[train])
    np.testing.assert_array_equal(got.X_test, pool[test])

"""Command line: ``anomaly fit``, ``anomaly score`` and ``anomaly benchmark``.

Results go to stdout, progress bars to stderr; bad input ends with a one-line ``error: ...`` on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import typer

try:  # recent typer ships its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - typer releases built on the click package
    from click import exceptions as click_exceptions

__all__ = ["app", "main"]

app = typer.Typer(
    name="anomaly",
    help="Anomaly detection with an energy-based GAN (MEG) trained on core-set batches.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Dataset(str, Enum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"


class Protocol(str, Enum):
    heldout = "heldout"
    one_class = "one-class"


class Network(str, Enum):
    auto = "auto"
    mlp = "mlp"
    conv = "conv"


class Score(str, Enum):
    energy = "energy"
    gradnorm = "gradnorm"
    both = "energy+gradnorm"


class CliError(Exception):
    """An error to show as one line and exit with status 1."""


@dataclass
class UserData:
    """Samples read from a user's file or folder, laid out for the detector."""

    X: np.ndarray
    y: np.ndarray | None
    kind: str  # "table" or "images"


def load_user_data(
    path: Path, *, label_column: str | None = None, image_size: int | None = None, channels=None
) -> UserData:
    """Read a CSV, ``.npy``/``.npz`` file, or an image folder into detector input.

    Image folders become float32 ``(N, C, H, W)`` arrays in [-1, 1]; ``channels`` (1 or 3) forces
    grey or colour.
    """
    from datasets import load_image_folder, load_table, to_model_input

    if not path.exists():
        raise CliError(f"data not found: {path}")
    if path.is_dir():
        grayscale = None if channels is None else channels == 1
        images, _, _ = load_image_folder(path, image_size=image_size, grayscale=grayscale)
        return UserData(to_model_input(images), None, "images")
    X, y = load_table(path, label_column=label_column)
    return UserData(X, y, "table")


def _read_labels(path: Path, n: int) -> np.ndarray:
    """One label per sample from a ``.npy`` vector or a one-column CSV / ``.npz`` table."""
    from datasets import DataError, load_table

    if not path.exists():
        raise CliError(f"labels file not found: {path}")
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise DataError(f"{path} is not a readable .npy file: {err}") from None
    else:
        values, _ = load_table(path)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    return values


def _model_channels(detector) -> int | None:
    shape = detector.input_shape_
    return shape[0] if len(shape) == 3 else None


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for line in lines:
            typer.echo(line)


def _metrics_line(metrics: dict) -> str:
    return (
        f"AUROC {metrics['auroc']:.4f}  AUPRC {metrics['auprc']:.4f}  "
        f"AP {metrics['average_precision']:.4f}"
    )


@app.command()
def fit(
    data: Path | None = typer.Argument(
        None,
        help="A CSV, .npy/.npz file or image folder of normal samples. "
        "Without it, a built-in data set is split, trained on and evaluated (default: digits).",
        show_default=False,
    ),
    dataset: Dataset | None = typer.Option(
        None, help="Built-in data set (used when DATA is not given). [default: digits]"
    ),
    protocol: Protocol = typer.Option(
        Protocol.heldout,
        help="heldout: the class is the anomaly, the rest normal; "
        "one-class: the class is normal, the rest anomalies.",
    ),
    cls: int = typer.Option(0, "--class", help="Class (digit) that defines the split."),
    data_root: Path | None = typer.Option(
        None, help="Folder of downloaded data sets [default: $ANOMALY_DATA_ROOT or a user cache]."
    ),
    label_column: str | None = typer.Option(
        None, help="CSV column holding labels, dropped from the features."
    ),
    image_size: int | None = typer.Option(None, help="Resize images in DATA to this side."),
    n_iter: int | None = typer.Option(
        None, help="Generator updates [default: 1000; 600 for digits]."
    ),
    batch_size: int = typer.Option(64, help="Core-set batch size."),
    n_energy_steps: int = typer.Option(5, help="Energy updates per generator update."),
    latent_dim: int | None = typer.Option(
        None, help="Latent size of the generator [default: 64 for images, 32 for vectors]."
    ),
    network: Network = typer.Option(Network.auto, help="Network family."),
    width: int | None = typer.Option(
        None, help="MLP hidden units / base conv channels [default: 256 / 16]."
    ),
    learning_rate: float = typer.Option(2e-4, help="Adam learning rate."),
    gp_weight: float = typer.Option(1.0, help="Weight of the zero-centred gradient penalty."),
    coreset: bool = typer.Option(
        True, help="Core-set batches (--no-coreset: plain random batches, factors 1)."
    ),
    prior_factor: int = typer.Option(4, help="Latent over-sampling factor for k-center."),
    data_factor: int | None = typer.Option(
        None,
        help="Data over-sampling factor for k-center [default: 1 (latents only) for images, "
        "8 for vectors].",
    ),
    ema_decay: float = typer.Option(0.99, help="Weight-average decay of the scoring energy net."),
    embedding: str = typer.Option(
        "pixels",
        help="Embedding for core-set selection: 'pixels' or a TorchScript feature extractor "
        "file (e.g. an Inception network).",
    ),
    cache_dir: Path | None = typer.Option(None, help="Folder to cache data embeddings in."),
    score: Score | None = typer.Option(
        None,
        help="Anomaly score: energy, gradient norm, or both added [default: energy+gradnorm for "
        "images, energy for vectors].",
    ),
    contamination: str = typer.Option(
        "auto", help="'auto' or the share of training samples called outliers, in (0, 0.5]."
    ),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    out: Path = typer.Option(Path("anomaly-model"), help="Folder the fitted model is saved to."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved options and exit without training."
    ),
):
    """Train a detector on DATA (or a built-in split), save it, and report test metrics."""
    from anomaly import MEGDetector, evaluate, save_model
    from anomaly.settings import IMAGE_DATASETS
    from anomaly.settings import preset as detector_params

    _configure_logging(quiet)
    if contamination != "auto":
        try:
            contamination_value: str | float = float(contamination)
        except ValueError:
            raise CliError(
                f"--contamination must be 'auto' or a number, got {contamination!r}"
            ) from None
    else:
        contamination_value = "auto"
    source = "file" if data is not None else (dataset or Dataset.digits).value
    if data is not None and dataset is not None:
        raise CliError("give either DATA or --dataset, not both")
    # One set of defaults per data family, shared with the benchmarks; options override it.
    is_images = data.is_dir() if data is not None else source in IMAGE_DATASETS
    # The detector's own defaults, overlaid with the family's preset.
    preset = {
        **MEGDetector().get_params(),
        **detector_params(IMAGE_DATASETS[0] if is_images else "vectors"),
    }
    if n_iter is None:
        n_iter = 600 if source == "digits" else preset["n_iter"]
    params = dict(
        n_iter=n_iter,
        batch_size=batch_size,
        n_energy_steps=n_energy_steps,
        latent_dim=latent_dim or preset["latent_dim"],
        network=network.value,
        width=width or preset["width"],
        learning_rate=learning_rate,
        gp_weight=gp_weight,
        prior_factor=prior_factor if coreset else 1,
        data_factor=(preset["data_factor"] if data_factor is None else data_factor)
        if coreset
        else 1,
        ema_decay=ema_decay,
        embedding=embedding,
        cache_dir=None if cache_dir is None else str(cache_dir),
        score_type=preset["score_type"] if score is None else score.value,
        contamination=contamination_value,
        device=device,
        random_state=seed,
        verbose=not quiet,
    )
    if dry_run:
        resolved = {
            "data": str(data) if data else None,
            "dataset": source,
            "protocol": protocol.value,
            "class": cls,
            "out": str(out),
            "params": params,
        }
        typer.echo(json.dumps(resolved, indent=None if as_json else 2))
        return
    detector = MEGDetector(**params)

    if data is not None:
        user = load_user_data(data, label_column=label_column, image_size=image_size)
        detector.fit(user.X)
        save_model(detector, out)
        result = {
            "data": str(data),
            "n_train": len(user.X),
            "model": str(out),
            "train_seconds": round(detector.train_seconds_, 2),
        }
        _emit(result, as_json, [f"trained on {len(user.X)} samples; model saved to {out}"])
        return

    from datasets import load_benchmark

    split = load_benchmark(source, protocol.value, cls, root=data_root, random_state=seed)
    detector.fit(split.X_train)
    save_model(detector, out)
    anomaly_score = -detector.score_samples(split.X_test)
    metrics = evaluate(split.y_test, anomaly_score)
    result = {
        "dataset": source,
        "protocol": protocol.value,
        "class": cls,
        "n_train": len(split.X_train),
        "n_test": len(split.X_test),
        **{k: round(v, 4) for k, v in metrics.items()},
        "train_seconds": round(detector.train_seconds_, 2),
        "model": str(out),
    }
    _emit(
        result,
        as_json,
        [
            f"{source} {protocol.value} class {cls}: trained on {len(split.X_train)}, "
            f"tested on {len(split.X_test)} ({int(split.y_test.sum())} anomalies)",
            _metrics_line(metrics),
            f"model saved to {out}",
        ],
    )


@app.command()
def score(
    model: Path = typer.Argument(..., help="Model folder written by 'anomaly fit'."),
    data: Path = typer.Argument(..., help="A CSV, .npy/.npz file or image folder to score."),
    out: Path = typer.Option(Path("scores.csv"), help="CSV to write, one row per sample."),
    labels: Path | None = typer.Option(
        None, help="File of 0/1 labels (1 = anomaly), one per sample: also print AUROC / AUPRC."
    ),
    label_column: str | None = typer.Option(
        None, help="CSV column holding 0/1 labels: dropped from the features, used as --labels."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No log lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
):
    """Score DATA with a saved model; write index, anomaly_score, score_samples, is_anomaly."""
    import pandas as pd

    from anomaly import evaluate, load_model
    from datasets import check_labels

    _configure_logging(quiet)
    detector = load_model(model, device=device)
    if data.is_dir() and len(detector.input_shape_) != 3:
        raise CliError(f"{model} was trained on vectors; it cannot score the image folder {data}")
    user = load_user_data(data, label_column=label_column, channels=_model_channels(detector))
    y = user.y
    if labels is not None:
        y = _read_labels(labels, len(user.X))
    if y is not None:
        y = check_labels(y, len(user.X), source="labels")
        if not set(np.unique(y).tolist()) <= {0, 1}:
            raise CliError("labels must be 0 (normal) or 1 (anomaly)")
    if user.kind == "images" and tuple(user.X.shape[1:]) != tuple(detector.input_shape_):
        raise CliError(
            f"images in {data} are {user.X.shape[1:]} (C, H, W) but the model expects "
            f"{tuple(detector.input_shape_)}"
        )
    normality = detector.score_samples(user.X)
    flagged = normality - detector.offset_ < 0
    table = pd.DataFrame(
        {
            "index": np.arange(len(normality)),
            "anomaly_score": -normality,
            "score_samples": normality,
            "is_anomaly": flagged.astype(int),
        }
    )
    _write_csv_atomic(table, out)
    result = {"n": len(table), "n_anomalies": int(flagged.sum()), "out": str(out)}
    lines = [f"scored {len(table)} samples, {int(flagged.sum())} flagged as anomalies; wrote {out}"]
    if y is not None:
        metrics = evaluate(y.astype(int), -normality)
        result.update({k: round(v, 4) for k, v in metrics.items()})
        lines.append(_metrics_line(metrics))
    _emit(result, as_json, lines)


class BenchmarkName(str, Enum):
    heldout = "heldout"
    one_class = "one-class"
    mixture = "mixture"
    cost = "cost"


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise CliError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise CliError(f"{what} is empty")
    return values


@app.command()
def benchmark(
    name: BenchmarkName = typer.Argument(
        ..., help="heldout (MNIST held-out digit, AUPRC), one-class (AUROC), mixture, or cost."
    ),
    dataset: str | None = typer.Option(
        None, help="Data set: mnist / digits for heldout; mnist / cifar10 for one-class."
    ),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    classes: str | None = typer.Option(None, help="Comma-separated classes [default: all]."),
    sides: str | None = typer.Option(
        None, help="Mixture grid sides, comma-separated [default: 5,7,10]."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes: a smoke test of the run."),
    data_root: Path | None = typer.Option(None, help="Folder of downloaded data sets."),
    out: Path = typer.Option(Path("results"), help="Output folder (a sub-folder per benchmark)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
    jobs: int = typer.Option(
        1, min=1, help="heldout / one-class: splits measured at once, in separate processes."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="heldout / one-class / mixture: keep the splits (mixture: grid, setting and seed "
        "rows) already in OUT/NAME and measure only the others.",
    ),
):
    """Run a benchmark; write CSV, Markdown table and plots to OUT/NAME; print the table."""
    from anomaly.benchmarks import BENCHMARKS

    _configure_logging(quiet)
    kwargs = dict(
        seeds=_int_list(seeds, "--seeds"),
        device=device,
        quick=quick,
        data_root=data_root,
        out_dir=out / (name.value if dataset is None else f"{name.value}-{dataset}"),
        verbose=not quiet,
    )
    if name is BenchmarkName.cost and resume:
        raise CliError("--resume applies to heldout, one-class and mixture, not cost")
    if name in (BenchmarkName.mixture, BenchmarkName.cost):
        if jobs != 1:
            raise CliError(f"--jobs applies to heldout and one-class, not {name.value}")
    else:
        kwargs.update(jobs=jobs)
    if name is not BenchmarkName.cost:
        kwargs.update(resume=resume)
    if name is BenchmarkName.mixture:
        if sides is not None:
            kwargs["sides"] = _int_list(sides, "--sides")
    else:
        if classes is not None:
            kwargs["classes"] = _int_list(classes, "--classes")
        if dataset is not None:
            kwargs["dataset"] = dataset
    typer.echo(BENCHMARKS[name.value](**kwargs))


def _write_csv_atomic(table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every failure into one line and an exit code."""
    from anomaly.persistence import ModelFileError, first_line
    from datasets import DataError

    try:
        result = app(args=argv, standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as err:  # `anomaly` alone: show the help
        typer.echo(err.ctx.get_help())
        return 0
    except click_exceptions.UsageError as err:
        typer.echo(f"error: {err.format_message()} (see --help)", err=True)
        return 2
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except (CliError, DataError, ModelFileError, ValueError, OSError, FloatingPointError) as err:
        typer.echo(f"error: {first_line(err)}", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

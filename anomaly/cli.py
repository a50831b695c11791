"""Command line: ``anomaly fit``, ``anomaly score`` and ``anomaly benchmark``.

Results go to stdout, progress bars to stderr; bad input ends with a one-line ``error: ...`` on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import numbers
import os
import signal
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import typer

from coreset_meg.anomaly.settings import IMAGE_DATASETS
from coreset_meg.common import atomic_path, first_line

try:  # recent typer ships its own copy of click
    from typer._click import core as click_core
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - typer releases built on the click package
    from click import core as click_core
    from click import exceptions as click_exceptions

__all__ = ["app", "main"]

#: ``coreset_meg.datasets.images.MAX_IMAGE_SIDE``, spelt out here so that ``--help`` does not import
#: it.
MAX_IMAGE_SIDE = 4096

app = typer.Typer(
    name="anomaly",
    help="Anomaly detection with an energy-based GAN (MEG) trained on core-set batches. "
    "Options given before the command apply to it: anomaly -v fit ...",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class PanelledCommand(typer.core.TyperCommand):
    """A command whose ``--help`` lists its options in sections, by their ``rich_help_panel``
    (plain text, as every command's help: no rich import, so ``--help`` stays fast)."""

    #: The sections, in order; options without a panel go under "Other options".
    PANELS = ("Data", "Model", "Training", "Output", "Advanced")

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                panel = "Arguments"
            else:
                panel = getattr(param, "rich_help_panel", None) or "Other options"
            sections.setdefault(panel, []).append(record)
        order = ["Arguments", *self.PANELS]
        for panel in sorted(sections, key=lambda p: order.index(p) if p in order else len(order)):
            plain = panel in ("Arguments", "Other options")
            with formatter.section(panel if plain else f"{panel} options"):
                formatter.write_dl(sections[panel])


#: The help section of each settings group's options (``anomaly fit --help``); the research
#: switches of any group go under "Advanced".
_SETTING_PANELS = {"networks": "Model", "inputs": "Model", "scoring": "Model",
                   "objective": "Advanced", "tickets": "Advanced", "batches": "Training",
                   "schedule": "Training", "run": "Training"}  # fmt: skip
_ADVANCED = {"coreset_fraction", "gaussian_weight", "max_centres", "temperature", "bounded_output",
             "spectral_norm", "prior_factor", "data_factor", "projection_dim", "prior", "friendly",
             "truncation", "ema_decay", "generator_ema", "lr_decay_start", "n_snapshots",
             "image_shape", "checkpoint_path"}  # fmt: skip

_FIT_EXAMPLES = """Examples:

\b
  anomaly fit normal.csv --out model            # a table: one row per sample
  anomaly fit images/good --out model           # a folder of normal images
  anomaly fit mvtec/bottle --out model          # an anomalib root: trains on train/good
  anomaly fit images --normal-class good        # class sub-folders: train on one
  anomaly fit --dataset mnist --class 3         # a built-in split, with test metrics
  anomaly fit normal.csv --dry-run              # print the resolved settings
"""


class Dataset(str, Enum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"


class Protocol(str, Enum):
    heldout = "heldout"
    one_class = "one-class"


class CliError(Exception):
    """An error to show as one line and exit with status 1."""


@dataclass
class UserData:
    """Samples read from a user's file or folder, laid out for the detector."""

    X: np.ndarray
    y: np.ndarray | None
    kind: str  # "table" or "images"
    names: list[str] | None = None  # a CSV's feature columns

    def named(self):
        """``X`` as a data frame with the CSV's column names (the detector keeps and checks
        them), or as is."""
        import pandas as pd

        return self.X if self.names is None else pd.DataFrame(self.X, columns=self.names)


@dataclass
class CsvOptions:
    """How a CSV file is read (``--header``, ``--id-column``, ``--drop-columns``)."""

    header: bool | None = None
    id_column: str | None = None
    drop_columns: list[str] = dataclasses.field(default_factory=list)

    def check(self, path: Path) -> None:
        """Refuse these options for anything but a CSV file."""
        if path.suffix.lower() == ".csv" and not path.is_dir():
            return
        for option, value in (
            ("--header/--no-header", self.header),
            ("--id-column", self.id_column),
            ("--drop-columns", self.drop_columns or None),
        ):
            if value is not None:
                raise CliError(f"{option} applies to CSV files, not to {path}")

    def kwargs(self) -> dict:
        return dict(header=self.header, id_column=self.id_column, drop_columns=self.drop_columns)


_HEADER_HELP = (
    "Whether a CSV file's first row holds the column names [default: yes, unless it is all "
    "numbers: then the file is read without a header, with a notice, and its columns go by "
    "position]."
)
_ID_HELP = (
    "CSV column of row ids or names (any text), left out of the features{}. An unnamed first "
    "column counting 0, 1, 2, ... (pandas' index) is dropped with a notice."
)
_DROP_HELP = "Comma-separated CSV columns left out of the features."


def _column_list(text) -> list[str]:
    """``--drop-columns``: comma-separated names (or a list, from a --config file)."""
    if text is None:
        return []
    if isinstance(text, list | tuple):
        return [str(c) for c in text]
    return [c.strip() for c in str(text).split(",") if c.strip()]


def load_user_data(
    path: Path,
    *,
    label_column: str | None = None,
    image_size: int | None = None,
    channels=None,
    csv_options: CsvOptions | None = None,
) -> UserData:
    """Read a CSV, ``.npy``/``.npz`` file, or an image folder into detector input.

    Image folders become float32 ``(N, C, H, W)`` arrays in [-1, 1]; ``channels`` (1 or 3) forces
    grey or colour.
    """
    from coreset_meg.datasets import (
        csv_feature_names,
        load_image_folder,
        load_table,
        to_model_input,
    )

    if not path.exists():
        raise CliError(f"data not found: {path}")
    csv_options = csv_options or CsvOptions()
    csv_options.check(path)
    if path.is_dir():
        if label_column is not None:
            raise CliError(
                f"--label-column applies to CSV and .npy/.npz files, not to the image folder {path}"
            )
        grayscale = None if channels is None else channels == 1
        images, _, _ = load_image_folder(path, image_size=image_size, grayscale=grayscale)
        return UserData(to_model_input(images), None, "images")
    X, y = load_table(path, label_column=label_column, **csv_options.kwargs())
    names = None
    if path.suffix.lower() == ".csv":
        names = csv_feature_names(path, label_column, **csv_options.kwargs())
    return UserData(X, y, "table", names)


def _read_labels(path: Path) -> np.ndarray:
    """One label per sample from a ``.npy`` vector or a one-column CSV / ``.npz`` table."""
    from coreset_meg.datasets import DataError, load_table

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


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


#: The log level chosen before the command (``-v``, ``--log-level``); None: from ``--quiet``.
_LOGGING: dict[str, int | None] = {"level": None}


def _configure_logging(quiet: bool) -> None:
    """Log lines on stderr: the level from ``--log-level`` or ``-v`` when given, else info
    (warning with ``--quiet``)."""
    from coreset_meg.common.distributed import is_main

    level = _LOGGING["level"]
    if level is None:
        level = logging.WARNING if quiet else logging.INFO
    if not is_main():  # under torchrun rank 0 speaks for all (RANK, before the group exists)
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)


def _print_version(value: bool) -> None:
    if value:
        from coreset_meg.anomaly import __version__

        typer.echo(f"anomaly (coreset-meg) {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    verbose: int = typer.Option(
        0,
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="Debug log lines (same as --log-level debug).",
    ),
    log_level: LogLevel | None = typer.Option(
        None, "--log-level", help="Log level of every command [default: info; --quiet: warning]."
    ),
) -> None:
    """Anomaly detection with an energy-based GAN (MEG) trained on core-set batches.

    Options before the command apply to every command: ``anomaly -v fit ...``.
    """
    if log_level is not None:
        _LOGGING["level"] = getattr(logging, log_level.value.upper())
    elif verbose:
        _LOGGING["level"] = logging.DEBUG
    else:
        _LOGGING["level"] = None


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    from coreset_meg.common.distributed import is_main

    if not is_main():  # under torchrun rank 0 prints the result
        return
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


# ------------------------------------------------------------------------------------ fit
def _setting_options(command):
    """Add one ``--option`` per setting (coreset_meg.anomaly.settings.GROUPS) to a typer command.

    The command is called with the values given on the command line as ``settings`` (a dict of
    the setting names given; unset options are absent), so presets and ``--config`` files can
    fill the rest.
    """
    from coreset_meg.anomaly.settings import GROUPS, PRESETS
    from coreset_meg.gan.config import setting_fields

    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.name != "settings"]
    annotations = {k: v for k, v in command.__annotations__.items() if k != "settings"}
    names = []
    for group, field in setting_fields(GROUPS):
        meta = field.metadata
        if meta["option"] is None:
            continue
        option = "--" + (meta["option"] or field.name).replace("_", "-")
        kind = meta["kind"]
        annotation = {numbers.Real: float, tuple: tuple[float, float]}.get(kind, kind)
        defaults = [f"{field.default}"] + [
            f"{family} {values[field.name]}"
            for family, values in PRESETS.items()
            if field.name in values
        ]
        if meta["choices"]:  # an Enum: typer lists and checks the choices
            annotation = Enum(field.name, {c: c for c in meta["choices"]}, type=str)
        if annotation is bool:
            option = f"{option}/--no-{option[2:]}"
        info = typer.Option(
            None,
            option,
            help=f"{meta['help'][0].upper()}{meta['help'][1:]} [default: {'; '.join(defaults)}].",
            show_default=False,
            rich_help_panel="Advanced" if field.name in _ADVANCED else _SETTING_PANELS[group],
        )
        params.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                              annotation=annotation | None)
        )  # fmt: skip
        annotations[field.name] = annotation | None
        names.append(field.name)

    @functools.wraps(command)
    def wrapper(**kwargs):
        given = {name: kwargs.pop(name) for name in names}
        given = {k: v.value if isinstance(v, Enum) else v for k, v in given.items()}
        return command(settings={k: v for k, v in given.items() if v is not None}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = annotations
    return wrapper


def _read_config(path: Path) -> dict:
    """A ``--config`` file: JSON as ``anomaly fit --dry-run`` prints it."""
    from coreset_meg.anomaly.settings import GROUPS
    from coreset_meg.common import read_regular_text

    try:
        config = json.loads(read_regular_text(path, limit=_MAX_CONFIG_BYTES))
    except FileNotFoundError:
        raise CliError(f"config file not found: {path}") from None
    except RecursionError:
        raise CliError(f"{path} is not a readable JSON config: nested too deeply") from None
    except (OSError, ValueError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise CliError(f"{path} is not a readable JSON config: {first_line(err)}") from None
    if not isinstance(config, dict):
        raise CliError(f"{path} must hold a JSON object like 'anomaly fit --dry-run' prints")
    unknown = sorted(set(config) - set(_RUN_KEYS) - {"settings"})
    settings = config.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(g, dict) for g in settings.values()):
        raise CliError(f"{path}: 'settings' must map group names to objects")
    unknown += sorted(f"settings.{g}" for g in set(settings) - set(GROUPS))
    known = {g: {f.name for f in dataclasses.fields(cls)} for g, cls in GROUPS.items()}
    for group, values in settings.items():
        unknown += sorted(f"settings.{group}.{k}" for k in set(values) - known.get(group, set()))
    if unknown:
        raise CliError(f"{path}: unknown key(s) {', '.join(unknown)}")
    for key, value in config.items():
        if key != "settings" and not _RUN_KEY_CHECKS[key](value):
            raise CliError(f"{path}: {key} is {json.dumps(value)}; {_RUN_KEY_HELP[key]}")
    return config


#: The largest --config file read (a resolved config is a few kilobytes).
_MAX_CONFIG_BYTES = 16 * 2**20


def _is_text(value, none: bool = True) -> bool:
    return isinstance(value, str) or (none and value is None)


def _is_count(value, none: bool = True) -> bool:
    if value is None:
        return none
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: What each run key of a --config file must be, and how to say so.
_RUN_KEY_CHECKS = {
    "data": _is_text,
    "dataset": lambda v: v is None or v in {d.value for d in Dataset},
    "protocol": lambda v: v in {p.value for p in Protocol},
    "class": lambda v: _is_count(v, none=False),
    "out": lambda v: _is_text(v, none=False) and v != "",
    "label_column": _is_text,
    "normal_class": _is_text,
    "header": lambda v: v is None or isinstance(v, bool),
    "id_column": _is_text,
    "drop_columns": lambda v: _is_text(v) or (isinstance(v, list) and all(map(_is_text, v))),
    "image_size": _is_count,
    "data_root": _is_text,
}
_RUN_KEY_HELP = {
    "data": "expected a path (a string) or null",
    "dataset": f"expected one of {', '.join(d.value for d in Dataset)} or null",
    "protocol": f"expected one of {', '.join(p.value for p in Protocol)}",
    "class": "expected a whole number",
    "out": "expected a folder path (a string)",
    "label_column": "expected a column name (a string) or null",
    "normal_class": "expected a sub-folder name (a string) or null",
    "header": "expected true, false or null",
    "id_column": "expected a column name (a string) or null",
    "drop_columns": "expected column names (a list of strings, or one comma-separated string)",
    "image_size": "expected a whole number or null",
    "data_root": "expected a folder path (a string) or null",
}


def _expand_folder(path: Path | str | None, option: str) -> Path | None:
    """``path`` with a leading ``~`` or ``~user`` expanded, or a one-line error naming the
    option when it cannot be (an unknown user, no home folder)."""
    if path is None:
        return None
    try:
        return Path(path).expanduser()
    except RuntimeError as err:
        raise CliError(f"{option} {path}: cannot expand '~' ({first_line(err)})") from None


#: The run options a --config file may hold besides the settings, and their defaults.
_RUN_KEYS = {
    "data": None,
    "dataset": None,
    "protocol": "heldout",
    "class": 0,
    "out": "anomaly-model",
    "label_column": None,
    "normal_class": None,
    "header": None,
    "id_column": None,
    "drop_columns": None,
    "image_size": None,
    "data_root": None,
}


@app.command(cls=PanelledCommand, epilog=_FIT_EXAMPLES)
@_setting_options
def fit(
    ctx: typer.Context,
    data: Path | None = typer.Argument(
        None,
        help="A CSV, .npy/.npz file or image folder of normal samples. "
        "Without it, a built-in data set is split, trained on and evaluated (default: digits).",
        show_default=False,
    ),
    dataset: Dataset | None = typer.Option(
        None,
        help="Built-in data set (used when DATA is not given). [default: digits]",
        rich_help_panel="Data",
    ),
    protocol: Protocol = typer.Option(
        Protocol.heldout,
        help="heldout: the class is the anomaly, the rest normal; "
        "one-class: the class is normal, the rest anomalies.",
        rich_help_panel="Data",
    ),
    cls: int = typer.Option(
        0, "--class", help="Class (digit) that defines the split.", rich_help_panel="Data"
    ),
    data_root: Path | None = typer.Option(
        None,
        help="Folder of downloaded data sets [default: $ANOMALY_DATA_ROOT or a user cache].",
        rich_help_panel="Data",
    ),
    label_column: str | None = typer.Option(
        None, help="CSV column holding labels, dropped from the features.", rich_help_panel="Data"
    ),
    header: bool | None = typer.Option(
        None, "--header/--no-header", help=_HEADER_HELP, show_default=False, rich_help_panel="Data"
    ),
    id_column: str | None = typer.Option(None, help=_ID_HELP.format(""), rich_help_panel="Data"),
    drop_columns: str | None = typer.Option(None, help=_DROP_HELP, rich_help_panel="Data"),
    image_size: int | None = typer.Option(
        None,
        min=1,
        max=MAX_IMAGE_SIDE,
        help="Resize images in DATA to this side.",
        rich_help_panel="Data",
    ),
    normal_class: str | None = typer.Option(
        None,
        help="Image folders of class sub-folders (DATA/good, DATA/<defect>, ...): train on the "
        "sub-folder of normal images only [default: an anomalib root (train/good, test/...) "
        "trains on train/good; other class folders are all trained on, with a warning].",
        rich_help_panel="Data",
    ),
    coreset: bool = typer.Option(
        True,
        help="Core-set batches (--no-coreset: plain random batches, factors 1).",
        rich_help_panel="Training",
    ),
    contamination: str | None = typer.Option(
        None,
        help="'auto' or the share of training samples called outliers, in (0, 0.5] "
        "[default: auto].",
        rich_help_panel="Model",
        show_default=False,
    ),
    seed: int = typer.Option(0, help="Random seed.", rich_help_panel="Training"),
    out: Path = typer.Option(
        Path("anomaly-model"), help="Folder the fitted model is saved to.", rich_help_panel="Output"
    ),
    config: Path | None = typer.Option(
        None,
        help="JSON file as --dry-run prints it; options given on the command line override it.",
        rich_help_panel="Output",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted fit from the checkpoint beside OUT (written with "
        "--checkpoint-every); it ends as the fit would have without the interruption.",
        rich_help_panel="Training",
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Discard the checkpoint an interrupted fit left beside OUT and start afresh "
        "(without --resume or --restart such a checkpoint is kept and the fit refused).",
        rich_help_panel="Training",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar or log lines.", rich_help_panel="Output"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as one JSON object.", rich_help_panel="Output"
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the resolved options and settings and exit.",
        rich_help_panel="Output",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Folder to write the training curves to (PNGs and index.html): a new or empty "
        "folder, or an earlier report.",
        rich_help_panel="Output",
    ),
    settings: dict | None = None,
):
    """Train a detector on DATA (or a built-in split), save it, and report test metrics.

    Settings come from the detector's defaults, then the data family's preset (images: MNIST,
    Fashion-MNIST, CIFAR-10 or an image folder; vectors: the rest), then --config, then the
    options given here.
    """
    from coreset_meg.anomaly import MEGDetector
    from coreset_meg.anomaly.settings import detector_params, group_params

    _configure_logging(quiet)
    given = {k for k in ctx.params if _from_command_line(ctx, k)}
    file = _read_config(config) if config is not None else {}
    run = {**_RUN_KEYS, **{k: v for k, v in file.items() if k != "settings"}}
    cli_values = dict(data=data, dataset=dataset, protocol=protocol, out=out, data_root=data_root,
                      label_column=label_column, image_size=image_size, header=header,
                      id_column=id_column, drop_columns=drop_columns,
                      normal_class=normal_class)  # fmt: skip
    run.update({k: v for k, v in cli_values.items() if k in given})
    if "cls" in given:
        run["class"] = cls
    data = None if run["data"] is None else Path(run["data"])
    run["data_root"] = _expand_folder(run["data_root"], "--data-root")
    dataset, out = run["dataset"], Path(run["out"])
    protocol, cls = Protocol(run["protocol"]), int(run["class"])
    if data is not None and dataset is not None:
        raise CliError("give either DATA or --dataset, not both")
    source = "file" if data is not None else Dataset(dataset or Dataset.digits).value
    is_images = data.is_dir() if data is not None else source in IMAGE_DATASETS

    flags = _flag_settings(given, file, seed, quiet, contamination, coreset, settings or {})
    params = _fit_settings(is_images, seed, file, settings or {}, flags)
    checkpoint = out.parent / f".{out.name}.checkpoint.pt"
    if resume or params["checkpoint_every"]:
        params["checkpoint_path"] = str(checkpoint)
    detector = MEGDetector(**detector_params(params))
    detector._config()  # every setting checked before anything is read or trained
    if is_images and params["image_range"] == "unit":
        raise CliError(
            "--image-range unit applies to float image arrays (.npy/.npz); the images of "
            f"{data or source} are read as 0..255"
        )
    if dry_run:
        resolved = {
            "data": str(data) if data else None,
            "dataset": source if data is None else None,
            "protocol": protocol.value,
            "class": cls,
            "out": str(out),
            **_resolved_run(run),
            "settings": group_params(params),
        }
        typer.echo(json.dumps(resolved, indent=None if as_json else 2))
        return
    from coreset_meg.common import distributed

    distributed.init_from_env(params["device"])  # joins the others when started by torchrun
    _check_fit_destinations(out, report, {"the data": data, "the config file": config})
    _check_checkpoint(checkpoint, out, resume, restart)

    if run["data_root"] is not None:  # built-in friendly sets (Spider GAN) are read there too
        os.environ[_DATA_ROOT_ENV] = str(run["data_root"])
    if data is not None:
        result, lines = _fit_file(detector, data, run, out, checkpoint, report)
    else:
        split = (source, protocol.value, cls, params["random_state"])
        result, lines = _fit_benchmark(detector, split, run, out, checkpoint, report)
    distributed.finish()  # every rank done before any leaves the group
    _emit(result, as_json, lines)


def _fit_settings(is_images: bool, seed, file: dict, settings: dict, flags: dict) -> dict:
    """The flat settings of a fit: defaults < the family preset < --config < the options."""
    from coreset_meg.anomaly.settings import default_settings, preset

    params = {**default_settings(), **preset("images" if is_images else "vectors")}
    params["random_state"] = seed
    for group in file.get("settings", {}).values():
        params.update(group)
    params.update(settings)
    params.update(flags)
    for key in ("betas", "image_shape"):  # JSON lists; other values fail the settings' checks
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    return params


def _resolved_run(run: dict) -> dict:
    """The reading options of a fit as ``--dry-run`` prints them."""
    return {
        "label_column": run["label_column"],
        "normal_class": run["normal_class"],
        "header": run["header"],
        "id_column": run["id_column"],
        "drop_columns": _column_list(run["drop_columns"]) or None,
        "image_size": run["image_size"],
        "data_root": None if run["data_root"] is None else str(run["data_root"]),
    }


def _check_fit_destinations(out: Path, report: Path | None, inputs: dict) -> None:
    """Every destination checked before any work: nothing of the user's is replaced, and no
    input (the data, the config file) lies where an output goes."""
    from coreset_meg.anomaly.persistence import check_model_destination

    _check_apart(out, "--out", inputs)
    check_model_destination(out)  # refuse a folder that is not ours before training
    _check_not_current(out, "--out")
    _check_writable(out)
    if report is not None:
        from coreset_meg.anomaly.report import check_report_destination

        check_report_destination(report)  # refused before training, not after
        _check_not_current(report, "--report")
        _check_apart(report, "--report", {**inputs, "--out": out})
        _check_no_model_above(report, "--report")
        _check_writable(report)


def _check_checkpoint(checkpoint: Path, out: Path, resume: bool, restart: bool) -> None:
    """The checkpoint beside ``out``: resumed with --resume, removed with --restart, else an
    interrupted fit's checkpoint is an error (its work is the user's to keep or discard)."""
    from coreset_meg.common import distributed

    if resume and restart:
        raise CliError("give --resume or --restart, not both")
    if resume and not checkpoint.exists():
        raise CliError(f"nothing to resume: no checkpoint {checkpoint} beside {out}")
    if not resume and checkpoint.exists():
        if not restart:
            raise CliError(
                f"an interrupted fit left the checkpoint {checkpoint}: continue it with "
                "--resume, or discard it and start afresh with --restart"
            )
        if distributed.is_main():
            checkpoint.unlink()
    distributed.barrier()  # no rank looks for the checkpoint before it is gone


def _fit_file(detector, data: Path, run: dict, out: Path, checkpoint: Path, report):
    """Fit on the user's file or image folder and save; the result and its lines."""
    data = _normal_images(data, run["normal_class"])
    csv_options = CsvOptions(run["header"], run["id_column"], _column_list(run["drop_columns"]))
    user = load_user_data(
        data, label_column=run["label_column"], image_size=run["image_size"],
        csv_options=csv_options,
    )  # fmt: skip
    detector.fit(user.named())
    _save(detector, out, checkpoint, report)
    result = {
        "data": str(data),
        "n_train": len(user.X),
        "model": str(out),
        "train_seconds": round(detector.train_seconds_, 2),
    }
    return result, [f"trained on {len(user.X)} samples; model saved to {out}"]


def _fit_benchmark(detector, split: tuple, run: dict, out: Path, checkpoint: Path, report):
    """Fit on a built-in split ``(dataset, protocol, class, seed)``, save, and evaluate on its
    test samples; the result and its lines."""
    from coreset_meg.anomaly import evaluate
    from coreset_meg.datasets import load_benchmark

    source, protocol, cls, seed = split
    root = None if run["data_root"] is None else Path(run["data_root"])
    data = load_benchmark(source, protocol, cls, root=root, random_state=seed)
    detector.fit(data.X_train)
    _save(detector, out, checkpoint, report)
    anomaly_score = -detector.score_samples(data.X_test)
    metrics = evaluate(data.y_test, anomaly_score, higher="anomalous")
    result = {
        "dataset": source,
        "protocol": protocol,
        "class": cls,
        "n_train": len(data.X_train),
        "n_test": len(data.X_test),
        **{k: round(v, 4) for k, v in metrics.items()},
        "train_seconds": round(detector.train_seconds_, 2),
        "model": str(out),
    }
    lines = [
        f"{source} {protocol} class {cls}: trained on {len(data.X_train)}, "
        f"tested on {len(data.X_test)} ({int(data.y_test.sum())} anomalies)",
        _metrics_line(metrics),
        f"model saved to {out}",
    ]
    return result, lines


def _normal_images(data: Path, normal_class: str | None) -> Path:
    """The folder ``fit`` trains on: an anomalib root's ``train/good`` (or
    ``train/NORMAL_CLASS``), a class folder's ``NORMAL_CLASS`` sub-folder, or DATA itself (with
    a warning when it holds several class sub-folders: all of them are trained on)."""
    log = logging.getLogger(__name__)
    if not data.is_dir():
        if normal_class is not None:
            raise CliError("--normal-class applies to image folders of class sub-folders")
        return data
    layout = _anomalib_layout(data)
    if layout is not None:
        train = layout[0] if normal_class is None else data / "train" / normal_class
        if not train.is_dir():
            raise CliError(f"--normal-class {normal_class}: {data / 'train'} has no such folder")
        log.info("%s is an anomalib folder: training on %s", data, train)
        return train
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if normal_class is not None:
        if normal_class not in classes:
            raise CliError(
                f"--normal-class {normal_class}: {data} has no sub-folder {normal_class!r} "
                f"(sub-folders: {', '.join(classes) or 'none'})"
            )
        return data / normal_class
    if len(classes) > 1:
        log.warning(
            "%s holds %d class sub-folders (%s): all are trained on as normal; to train on the "
            "normal images only, give --normal-class NAME",
            data, len(classes), ", ".join(classes),
        )  # fmt: skip
    return data


def _save(detector, out: Path, checkpoint: Path, report: Path | None) -> None:
    """Save the fitted model, remove the checkpoint and write the training report: rank 0's
    work under torchrun (the others wait for it)."""
    from coreset_meg.anomaly import save_model
    from coreset_meg.common import distributed

    if distributed.is_main():
        with distributed.alone():
            save_model(detector, out)
            checkpoint.unlink(missing_ok=True)
            _training_report(report, detector)
    distributed.barrier()


def _training_report(folder: Path | None, detector) -> None:
    """Write the training curves of a fitted detector into ``folder`` (nothing when None)."""
    if folder is None:
        return
    from coreset_meg.anomaly.report import training_report

    page = training_report(folder, detector.history_)
    logging.getLogger(__name__).info("training report written to %s", page)


def _flag_settings(given, file, seed, quiet, contamination, coreset, settings) -> dict:
    """The settings the hand-written options set (when given, or not set by --config)."""
    out: dict = {}
    factors = {k: v for k, v in settings.items() if k in ("prior_factor", "data_factor") and v != 1}
    if not coreset and factors:
        name, value = next(iter(factors.items()))
        raise CliError(f"--no-coreset conflicts with --{name.replace('_', '-')} {value}")
    if "seed" in given:
        out["random_state"] = seed
    if "quiet" in given or "verbose" not in file.get("settings", {}).get("run", {}):
        out["verbose"] = not quiet
    if contamination is not None:
        out["contamination"] = _contamination(contamination)
    if not coreset:
        out.update(prior_factor=1, data_factor=1)
    return out


def _from_command_line(ctx, name: str) -> bool:
    return ctx.get_parameter_source(name) == click_core.ParameterSource.COMMANDLINE


def _contamination(text: str) -> str | float:
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise CliError(f"--contamination must be 'auto' or a number, got {text!r}") from None


@app.command()
def score(
    model: Path = typer.Argument(..., help="Model folder written by 'anomaly fit'."),
    data: Path = typer.Argument(..., help="A CSV, .npy/.npz file or image folder to score."),
    out: Path = typer.Option(
        Path("scores.csv"), help="CSV to write, one row per sample ('-': standard output)."
    ),
    labels: Path | None = typer.Option(
        None, help="File of 0/1 labels (1 = anomaly), one per sample: also print AUROC / AUPRC."
    ),
    label_column: str | None = typer.Option(
        None, help="CSV column holding 0/1 labels: dropped from the features, used as --labels."
    ),
    header: bool | None = typer.Option(
        None,
        "--header/--no-header",
        help=_HEADER_HELP,
        show_default=False,
    ),
    id_column: str | None = typer.Option(
        None,
        help=_ID_HELP.format(" and written as the scores' first column (in place of index)"),
    ),
    drop_columns: str | None = typer.Option(None, help=_DROP_HELP),
    normal_class: str | None = typer.Option(
        None,
        help="Image folders of class sub-folders (root/good, root/<defect>, ...): the sub-folder "
        "of normal images; the others are anomalies. Also prints AUROC / AUPRC.",
    ),
    threshold: float | None = typer.Option(
        None,
        help="Flag the samples whose anomaly_score is above this [default: the model's "
        "threshold, set at fit].",
        show_default=False,
    ),
    contamination: str | None = typer.Option(
        None,
        help="Set the threshold so that this share of the training samples, in (0, 0.5], is "
        "flagged ('auto': 3 scaled MADs, as at fit).",
        show_default=False,
    ),
    report: Path | None = typer.Option(
        None,
        help="Folder to write a report to (index.html): the score histogram and threshold, ROC "
        "and PR curves, precision, recall and F1 at the threshold, galleries of false alarms "
        "and missed anomalies with labels, the most anomalous images. New, empty or an earlier "
        "report.",
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
    features_file: Path | None = typer.Option(
        None,
        help="The TorchScript file of a model fitted with --features torchscript:PATH: such a "
        "model runs code from outside its folder and is scored only with the file given here "
        "(it must be the file it was fitted with).",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        help="Folder to cache the image embeddings in [default: none; a model file's own "
        "cache_dir is not used].",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
):
    """Score DATA with a saved model; write index (image folders: path; --id-column: the ids),
    anomaly_score (higher = more anomalous) and is_anomaly (anomaly_score above the threshold).

    With labels (--labels, --label-column, --normal-class) it also prints AUROC / AUPRC, the
    precision, recall, F1 and false-positive rate at the threshold, the threshold that maximises
    F1 on these labels, and for image folders the share flagged of each class.

    With --out - the scores go to standard output; with --json as well, one JSON object holds
    the summary and the scores ("scores": one object per row).

    Text cells that start like a spreadsheet formula (=, +, -, @) are written with a leading '.

    CSV and .npy files are read in chunks (a .npy file memory-mapped) and the rows written as
    they are scored, so memory stays flat however long the file is.
    """
    from coreset_meg.anomaly import evaluate, load_model
    from coreset_meg.anomaly.metrics import threshold_summary
    from coreset_meg.anomaly.report import score_report
    from coreset_meg.common import distributed, progress

    _configure_logging(quiet)
    distributed.init_from_env(device)  # joins the others when started by torchrun
    main = distributed.is_main()  # rank 0 writes the scores; every rank scores a share
    to_stdout = str(out) == "-"
    _check_score_destinations(out, report, model, data, labels)
    detector = load_model(model, device=device, features_file=features_file, cache_dir=cache_dir)
    chosen = _set_threshold(detector, threshold, contamination)
    data, normal_class = _anomalib_test(data, normal_class)
    csv_options = CsvOptions(header, id_column, _column_list(drop_columns))
    source = _score_input(data, detector, labels, label_column, normal_class, csv_options)
    y_file = None if labels is None else _read_labels(labels)
    if y_file is not None and source.n is not None:
        _check_binary_labels(y_file, source.n)  # before any scoring when the count is known
    total = source.n
    if total is None and not quiet and sys.stderr.isatty():
        total = _count_csv_rows(data)
    show_bar = not quiet and not (to_stdout and sys.stdout.isatty())  # the table is on screen
    json_rows = [] if to_stdout and as_json else None  # --out - --json: the rows in the JSON
    handle = out if main and json_rows is None else None
    with progress(total or 0, f"Scoring {data.name}", enabled=show_bar) as bar:
        normality, y, n_flagged = _score_rows(detector, source, handle, json_rows, bar, y_file)
    n = len(normality)
    limit = -detector.offset_
    result = {"n": n, "n_anomalies": n_flagged, "out": str(out), "threshold": limit,
              "threshold_from": chosen}  # fmt: skip
    if source.resized:
        result["resized"] = source.resized
    summary = (
        f"scored {n} samples, {n_flagged} flagged as anomalies (anomaly_score above "
        f"{limit:.4g}: the threshold {chosen})"
    )
    lines = [f"{summary}; wrote {out}"]
    if y is not None:
        metrics = evaluate(y.astype(int), normality, higher="normal")
        result.update({k: round(v, 4) for k, v in metrics.items()})
        lines.append(_metrics_line(metrics))
        found = threshold_summary(y, -normality, limit, source.classes, normal_class)
        result.update(found)
        lines += _threshold_lines(found)
    if report is not None and main:
        with distributed.alone():
            page = score_report(
                report, -normality, limit, y=y, images=source.images, names=source.paths,
                classes=source.classes, normal=normal_class, threshold_from=chosen,
            )  # fmt: skip
        result["report"] = str(page)
        lines.append(f"report: {page}")
    distributed.finish()  # every rank done before any leaves the group
    if json_rows is not None:
        result["scores"] = json_rows
    elif to_stdout and main:  # the table is the output; the summary goes to stderr
        typer.echo("\n".join(["; ".join([summary, *lines[1:2]]), *lines[2:]]), err=True)
        return
    _emit(result, as_json, lines)


def _check_score_destinations(out: Path, report: Path | None, model, data, labels) -> None:
    """Refuse a scores file or report folder that would overwrite an input, a model or
    something that is not ours, before anything is scored."""
    from coreset_meg.anomaly.report import check_report_destination

    to_stdout = str(out) == "-"
    inputs = {"the model folder": model, "the data": data, "the labels file": labels}
    if not to_stdout:
        _check_output_file(out, inputs=[data, labels])
        if not (out.exists() and not out.is_file()):  # a device or pipe is written into
            _check_apart(out, "--out", inputs)
            _check_no_model_above(out, "--out")
    if report is not None:
        check_report_destination(report)
        _check_not_current(report, "--report")
        _check_apart(report, "--report", {**inputs, **({} if to_stdout else {"--out": out})})
        _check_no_model_above(report, "--report")
        _check_writable(report)


def _score_rows(detector, source, out: Path | None, json_rows: list | None, bar, y_file):
    """Score ``source`` chunk by chunk, writing each chunk's rows to the scores file ``out``
    (None: not written; ``-``: standard output) and to ``json_rows`` (None: not kept) as it
    goes. Returns ``(score_samples, labels or None, number flagged)``; the labels are checked
    before the output is put in place."""
    import contextlib

    import pandas as pd

    normality_parts, label_parts, n_flagged, start = [], [], 0, 0
    with contextlib.ExitStack() as stack:
        handle = None if out is None else _open_scores(stack, out, str(out) == "-")
        for X, y_part, ids in source.chunks:
            normality = detector.score_samples(X)
            flagged = ~(normality - detector.offset_ >= 0)  # a non-finite score is never an inlier
            if ids is not None:  # the --id-column's text
                keys = spreadsheet_safe(ids)
            elif source.paths is not None:
                keys = spreadsheet_safe(source.paths[start : start + len(normality)])
            else:
                keys = np.arange(start, start + len(normality))
            rows = pd.DataFrame(
                {source.key: keys, "anomaly_score": -normality, "is_anomaly": flagged.astype(int)}
            )
            if handle is not None:
                rows.to_csv(handle, index=False, header=start == 0)
            if json_rows is not None:
                json_rows += json.loads(rows.to_json(orient="records"))  # NaN -> null
            normality_parts.append(normality)
            n_flagged += int(flagged.sum())
            if y_part is not None:
                label_parts.append(y_part)
            start += len(normality)
            bar.advance(len(normality))
        normality = np.concatenate(normality_parts)
        y = source.y if not label_parts else np.concatenate(label_parts)
        if y_file is not None:
            y = y_file
        if y is not None:  # checked before the output is put in place
            y = _check_binary_labels(y, len(normality))
    return normality, y, n_flagged


def _set_threshold(detector, threshold: float | None, contamination: str | None) -> str:
    """Apply ``--threshold`` or ``--contamination``; say where the threshold comes from."""
    if threshold is not None and contamination is not None:
        raise CliError("give --threshold or --contamination, not both")
    if threshold is not None:
        detector.set_threshold(threshold)
        return "given with --threshold"
    if contamination is not None:
        detector.set_threshold(contamination=_contamination(contamination))
        return f"for --contamination {contamination}"
    return f"set at fit, contamination {detector.contamination}"


def _threshold_lines(found: dict) -> list[str]:
    """Text lines of :func:`coreset_meg.anomaly.metrics.threshold_summary`."""
    lines = []
    if "at_threshold" in found:
        m = found["at_threshold"]
        lines.append(
            f"at the threshold: precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
            f"F1 {m['f1']:.3f}  false-positive rate {m['false_positive_rate']:.3f} "
            f"({m['false_positives']} false alarms, {m['false_negatives']} anomalies missed)"
        )
        b = found["best_f1"]
        lines.append(
            f"best F1 {b['f1']:.3f} at threshold {b['threshold']:.4g} (precision "
            f"{b['precision']:.3f}, recall {b['recall']:.3f}; chosen on these labels)"
        )
    if "classes" in found:
        width = max(5, *(len(r["class"]) for r in found["classes"]))
        lines.append(f"{'class':<{width}}  samples  flagged  share flagged")
        for r in found["classes"]:
            role = "false alarms" if r["normal"] else "recall"
            lines.append(
                f"{r['class']:<{width}}  {r['samples']:>7}  {r['flagged']:>7}  "
                f"{r['rate']:.3f} ({role})"
            )
    return lines


def _anomalib_test(data: Path, normal_class: str | None) -> tuple[Path, str | None]:
    """An anomalib root (``train/``, ``test/``) is scored on its ``test`` folder, ``good``
    being the normal class unless ``--normal-class`` says otherwise."""
    layout = _anomalib_layout(data)
    if layout is None:
        return data, normal_class
    normal = normal_class or layout[2]
    logging.getLogger(__name__).info(
        "%s is an anomalib folder: scoring %s, %s as the normal class", data, layout[1], normal
    )
    return layout[1], normal


def _anomalib_layout(data: Path) -> tuple[Path, Path, str] | None:
    """``(train folder, test folder, normal class)`` of an anomalib root (``train/good``,
    ``test/...``), or None for any other path."""
    if not data.is_dir() or not (data / "train").is_dir() or not (data / "test").is_dir():
        return None
    for normal in ("good", "normal", "ok"):
        if (data / "train" / normal).is_dir():
            return data / "train" / normal, data / "test", normal
    return None


@dataclass
class _ScoreInput:
    """What ``anomaly score`` reads: detector input and labels in pieces, and what is known
    before reading them."""

    chunks: object  # an iterable of (X, y or None, ids or None) pieces, in sample order
    n: int | None  # number of samples (None for a CSV file: unknown until read)
    key: str = "index"  # the first column of the scores: "index", "path" or the --id-column
    paths: list[str] | None = None  # image files, relative to the scored folder
    y: np.ndarray | None = None  # labels known before scoring (from --normal-class)
    images: np.ndarray | None = None  # uint8 (N, H, W, C) images, for the report
    classes: list[str] | None = None  # each image's sub-folder (with --normal-class)
    resized: int = 0  # images of another size, resized to the model's


#: Images scored per piece (in memory already; the pieces move the progress bar). A multiple of
#: the detector's scoring batch (512), so the scores are those of one piece.
_IMAGE_CHUNK_ROWS = 1024


def _score_input(
    data: Path, detector, labels, label_column, normal_class, csv_options: CsvOptions
) -> _ScoreInput:
    """Open DATA for scoring: a table file in chunks, or an image folder in memory."""
    import pandas as pd

    from coreset_meg.datasets import TableChunks

    if not data.exists():
        raise CliError(f"data not found: {data}")
    csv_options.check(data)
    if not data.is_dir():
        if normal_class is not None:
            raise CliError("--normal-class applies to image folders of class sub-folders")
        table = TableChunks(data, label_column=label_column, **csv_options.kwargs())
        names = table.feature_names  # a CSV's columns, checked against the model's
        chunks = (
            (X if names is None else pd.DataFrame(X, columns=names), y, ids)
            for X, y, ids in table.with_ids()
        )
        key = "index" if csv_options.id_column is None else csv_options.id_column
        return _ScoreInput(chunks, table.n_rows, key)
    if len(detector.input_shape_) != 3:
        raise CliError(f"the model was trained on vectors; it cannot score the image folder {data}")
    for option, value in (("--label-column", label_column), ("--labels", labels)):
        if value is not None:
            raise CliError(
                f"{option} applies to CSV and .npy/.npz files; for the image folder {data}, "
                "give --normal-class NAME (labels from the sub-folder names)"
            )
    from coreset_meg.datasets import to_model_input

    images, paths, y, classes, resized = _read_image_folder(data, detector, normal_class)
    X = to_model_input(images)
    detector.set_params(image_range="symmetric")  # X is in [-1, 1]: a bright image is no doubt
    step = _IMAGE_CHUNK_ROWS
    chunks = ((X[start : start + step], None, None) for start in range(0, len(X), step))
    return _ScoreInput(chunks, len(X), "path", paths, y, images, classes, resized)


def _read_image_folder(data: Path, detector, normal_class: str | None):
    """``(uint8 images (N, H, W, C), paths relative to data, labels or None, classes or None,
    number resized)``; with ``normal_class``, label 0 for the images under
    ``data/normal_class``, 1 for the others. Images of another size than the model was trained
    at are resized to it (bicubic), with a warning."""
    from PIL import Image

    from coreset_meg.datasets import load_image_folder

    if normal_class is not None:
        found = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        if normal_class not in found:
            raise CliError(
                f"--normal-class {normal_class}: {data} has no sub-folder {normal_class!r} "
                f"(sub-folders: {', '.join(found) or 'none'})"
            )
    channels = _model_channels(detector)
    grayscale = None if channels is None else channels == 1
    size = tuple(detector.input_shape_[1:])  # (H, W) the model was trained at
    images, classes, class_names, files = load_image_folder(
        data, grayscale=grayscale, return_paths=True, image_size=size
    )
    resized = 0
    for file in files:  # the headers only: the sizes the files had
        with Image.open(file) as im:
            resized += im.size != size[::-1]
    if resized:
        logging.getLogger(__name__).warning(
            "resized %d of %d images in %s to %dx%d (HxW), the size the model was trained at",
            resized, len(files), data, *size,
        )  # fmt: skip
    paths = [f.relative_to(data).as_posix() for f in files]
    y = names = None
    if normal_class is not None:
        names = [str(c) for c in np.asarray(class_names)[classes]]
        y = (np.asarray(names) != normal_class).astype(np.int64)
    return images, paths, y, names, resized


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(texts) -> list[str]:
    """Text cells for a CSV file, each one that starts like a formula prefixed with ``'`` (as
    OWASP's CSV-injection advice says), so a spreadsheet shows it rather than runs it. For
    text columns only (file names, ids): numbers are written as they are.

    >>> spreadsheet_safe(["a.png", "=1+1", "-x.png"])
    ['a.png', "'=1+1", "'-x.png"]
    """
    return [f"'{t}" if str(t).startswith(_FORMULA_STARTS) else str(t) for t in texts]


def _check_binary_labels(y: np.ndarray, n: int) -> np.ndarray:
    from coreset_meg.datasets import check_labels

    y = check_labels(y, n, source="labels")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise CliError("labels must be 0 (normal) or 1 (anomaly)")
    return y


def _count_csv_rows(path: Path) -> int:
    """Lines after a CSV file's header (for the progress bar; blank lines count too)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines - (last == b"\n"), 0)


def _open_scores(stack, out: Path, to_stdout: bool):
    """The scores CSV as a text file, closed by the ``contextlib.ExitStack`` ``stack``: standard
    output, a device or pipe written into, or a temporary file that replaces ``out`` only when
    the stack closes without an error."""
    if to_stdout:
        return sys.stdout
    if out.exists() and not out.is_file():  # /dev/stdout, a pipe: written into, never replaced
        return stack.enter_context(open(out, "w", newline=""))
    tmp = stack.enter_context(atomic_path(out, suffix=".csv"))
    return stack.enter_context(open(tmp, "w", newline=""))


@app.command()
def friendly(
    data: str = typer.Argument(
        ...,
        help="The target set, named as friendly sets are: mnist:3, cifar10:0,1, digits, or an "
        "image folder.",
        show_default=False,
    ),
    candidates: list[str] | None = typer.Option(
        None,
        "--candidate",
        "-c",
        help="A candidate friendly set (repeat for more) [default: mnist, cifar10, digits and "
        "each of their ten classes].",
        show_default=False,
    ),
    features: str = typer.Option("efficientnet-lite0", help="Embedding the SID is computed in."),
    data_root: Path | None = typer.Option(
        None, help="Folder of downloaded data sets [default: $ANOMALY_DATA_ROOT or a user cache]."
    ),
    cache_dir: Path | None = typer.Option(
        Path("results") / "embeddings", help="Embedding cache folder (the benchmarks' cache)."
    ),
    max_samples: int = typer.Option(2000, min=1, help="Embeddings of each set compared, at most."),
    seed: int = typer.Option(0, help="Seeds the subsamples and the SID's test points."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
):
    """Rank candidate friendly sets for DATA by their signed inception distance (Spider GAN).

    Lowest SID first: 0 is a set against itself, positive means farther from DATA's
    neighbourhood than DATA. Fit with the chosen one: anomaly fit --prior friendly --friendly SET.
    """
    from coreset_meg.anomaly.friendly import default_candidates, rank_friendly

    names = list(candidates) if candidates else default_candidates(data)
    ranking = rank_friendly(
        data, names, features=features, root=_expand_folder(data_root, "--data-root"),
        cache_dir=cache_dir,
        max_samples=max_samples, random_state=seed,
    )  # fmt: skip
    result = {
        "target": data,
        "features": features,
        "ranking": [{"candidate": name, "sid": sid} for name, sid in ranking],
    }
    lines = [f"SID to {data} ({features}), friendliest first:", "rank  SID         candidate"]
    lines += [f"{i:>4}  {sid:<10.4g}  {name}" for i, (name, sid) in enumerate(ranking, 1)]
    _emit(result, as_json, lines)


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


@app.command()
def export(
    model: Path = typer.Argument(..., help="Model folder written by 'anomaly fit'."),
    file_format: ExportFormat = typer.Option(
        ExportFormat.torchscript,
        "--format",
        help="torchscript (torch.jit.load), or onnx (needs pip install 'coreset-meg[onnx]').",
    ),
    out: Path = typer.Option(..., help="File to write (e.g. model.pt or model.onnx)."),
    features_file: Path | None = typer.Option(
        None, help="The TorchScript file of a model fitted with --features torchscript:PATH."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
):
    """Write MODEL's score_samples as one TorchScript or ONNX file other tools can run.

    The file takes float32 samples shaped as in training (vectors (N, d); images (N, C, H, W) in
    [-1, 1]) and returns score_samples (higher = more normal), scaling and embedding them as
    the model does; its metadata.json holds these conventions and the threshold (offset).
    """
    from coreset_meg.anomaly import load_model
    from coreset_meg.anomaly.export import export_model

    if out.exists() and not out.is_file():
        raise CliError(f"--out {out} exists and is not a file; refusing to replace it")
    if model.is_dir() and _inside(out, model):
        raise CliError(f"--out {out} is inside the model folder {model}; refusing to write there")
    _check_writable(out)
    detector = load_model(model, features_file=features_file)
    export_model(detector, out, file_format.value)
    shape = ", ".join(str(s) for s in detector.input_shape_)
    result = {
        "model": str(model),
        "format": file_format.value,
        "out": str(out),
        "input_shape": ["N", *detector.input_shape_],
        "offset": detector.offset_,
    }
    line = f"wrote {out} ({file_format.value}): float32 (N, {shape}) -> score_samples (N,)"
    _emit(result, as_json, [line])


class BenchmarkName(str, Enum):
    heldout = "heldout"
    heldout_published = "heldout-published"
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
    settings: str | None = typer.Option(
        None,
        help="Mixture batch settings, comma-separated names [default: random 64,core-set 64,"
        "random 512]; BigGAN's: 'core-set 64 + orthogonal reg', '... + spectral norm', "
        "'... + G average'; issue 31's: 'core-set 64 stratified', 'core-set 64 data only', "
        "'core-set 64 latents only'.",
    ),
    truncations: str | None = typer.Option(
        None,
        help="Mixture: truncation thresholds, comma-separated, measured on every generator "
        "(truncation.csv, .md, .png).",
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
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace the results of an earlier run in OUT/NAME (without it, or --resume, an "
        "existing results folder is refused).",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON object: the output folder, the report and every results.csv row.",
    ),
):
    """Run a benchmark; write CSV, Markdown table and plots to OUT/NAME; print the table."""
    from coreset_meg.anomaly.benchmarks import BENCHMARKS

    _configure_logging(quiet)
    out_dir = out / (name.value if dataset is None else f"{name.value}-{dataset}")
    if resume and overwrite:
        raise CliError("give --resume or --overwrite, not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"{out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (resume or overwrite):
        raise CliError(
            f"{out_dir} holds an earlier run's results; continue it with --resume, replace it "
            "with --overwrite, or choose another --out"
        )
    kwargs = dict(
        seeds=_int_list(seeds, "--seeds"),
        device=device,
        quick=quick,
        data_root=_expand_folder(data_root, "--data-root"),
        out_dir=out_dir,
        verbose=not quiet,
    )
    if name is BenchmarkName.cost and resume:
        raise CliError("--resume applies to heldout, one-class and mixture, not cost")
    if name in (BenchmarkName.mixture, BenchmarkName.cost):
        if jobs != 1:
            raise CliError(f"--jobs applies to heldout and one-class, not {name.value}")
    else:
        kwargs.update(jobs=jobs)
    if name is not BenchmarkName.mixture and (settings or truncations):
        raise CliError("--settings and --truncations apply to mixture only")
    if name is not BenchmarkName.cost:
        kwargs.update(resume=resume)
    if name is BenchmarkName.mixture:
        if sides is not None:
            kwargs["sides"] = _int_list(sides, "--sides")
        if settings is not None:
            kwargs["settings"] = [n.strip() for n in settings.split(",") if n.strip()]
        if truncations is not None:
            try:
                kwargs["truncations"] = [float(t) for t in truncations.split(",") if t.strip()]
            except ValueError:
                raise CliError(f"--truncations must be numbers, got {truncations!r}") from None
    else:
        if classes is not None:
            kwargs["classes"] = _int_list(classes, "--classes")
        if dataset is not None:
            kwargs["dataset"] = dataset
    report = BENCHMARKS[name.value](**kwargs)
    if not as_json:
        typer.echo(report)
        return
    import pandas as pd

    table = pd.read_csv(kwargs["out_dir"] / "results.csv")
    rows = json.loads(table.to_json(orient="records"))  # NaN -> null
    result = {"benchmark": name.value, "out": str(kwargs["out_dir"]), "report": report}
    typer.echo(json.dumps({**result, "results": rows}))


def _check_output_file(out: Path, inputs: list[Path | None]) -> None:
    """Refuse, before any work, an output that would replace an input or a non-regular file,
    or that cannot be written."""
    for source in inputs:
        if source is not None and source.exists() and out.exists() and out.samefile(source):
            raise CliError(f"--out {out} is an input of this command; refusing to overwrite it")
    if out.is_dir():
        raise CliError(f"--out {out} is a folder; give a file name")
    if out.exists() and not out.is_file():  # /dev/stdout, a pipe: written into, never replaced
        return
    _check_writable(out)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_apart(out: Path, option: str, inputs: dict[str, Path | None]) -> None:
    """Refuse an output that is, holds or lies inside one of the named ``inputs`` folders or
    files (a data file inside the model folder it would replace, a report among the training
    images, scores written onto the model)."""
    for what, source in inputs.items():
        if source is None:
            continue
        source = Path(source)
        if _inside(source, out):
            raise CliError(
                f"{option} {out} holds {what} ({source}); refusing to write there "
                "(choose another destination)"
            )
        if (source.is_dir() or not source.exists()) and _inside(out, source):
            raise CliError(
                f"{option} {out} is inside {what} ({source}); refusing to write there "
                "(choose another destination)"
            )


def _check_not_current(out: Path, option: str) -> None:
    """Refuse a destination folder that holds the current folder (``--out .``): it is replaced
    or filled whole, which the current folder cannot be."""
    if _inside(Path.cwd(), out):
        raise CliError(f"{option} {out} is the current folder or holds it; choose a new folder")


def _check_no_model_above(out: Path, option: str) -> None:
    """Refuse an output inside a model folder: the next save of that model replaces the folder
    whole, and what was written there would be lost."""
    from coreset_meg.anomaly.persistence import model_folder_above

    folder = model_folder_above(out)
    if folder is not None:
        raise CliError(
            f"{option} {out} is inside the model folder {folder}; refusing to write there "
            "(the folder is replaced whole when the model is saved again)"
        )


def _check_writable(path: Path) -> None:
    """Raise unless ``path`` could be created or replaced (its nearest existing folder is
    writable)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise CliError(f"cannot write {path}: {folder} is not writable")


def _failure_types() -> tuple[type[BaseException], ...]:
    """The errors shown as one line: bad input, unreadable files, numbers that went wrong.

    Imported when a failure happens, not at start, so ``--help`` does not import torch.
    """
    from coreset_meg.anomaly.persistence import ModelFileError
    from coreset_meg.common.distributed import LaunchError
    from coreset_meg.datasets import DataError

    return (CliError, DataError, LaunchError, ModelFileError, ValueError, OSError,
            FloatingPointError)  # fmt: skip


def _wants_json(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


#: ``coreset_meg.datasets._paths.DATA_ROOT_ENV``, spelt out here so that ``--help`` does not
#: import ``coreset_meg.datasets``.
_DATA_ROOT_ENV = "ANOMALY_DATA_ROOT"


class _Terminated(BaseException):
    """SIGTERM or SIGHUP (a kill, a job's time limit): raised so that every ``with`` block
    unwinds and the temporary files being written are removed."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated(signal.Signals(signum).name, signum)


def _handle_signals() -> dict:
    """Turn SIGTERM and SIGHUP into :class:`_Terminated` where they would kill the process
    outright; the handlers replaced, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    replaced = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            replaced[signum] = signal.signal(signum, _raise_terminated)
    return replaced


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every failure into one line and an exit code.

    Errors go to stderr as ``error: ...``; with ``--json`` they are one JSON object on stdout
    (``{"error": ..., "exit_code": ...}``) as the results are.
    """
    as_json = _wants_json(argv)

    def fail(message: str, code: int) -> int:
        if as_json:
            typer.echo(json.dumps({"error": message, "exit_code": code}))
        else:
            typer.echo(f"error: {message}", err=True)
        return code

    data_root = os.environ.get(_DATA_ROOT_ENV)  # fit --data-root sets it for the command only
    handled = _handle_signals()
    try:
        result = app(args=argv, standalone_mode=False)
    except _Terminated as err:  # the files being written were removed on the way out
        return fail(f"stopped by {err.args[0]}; nothing was left half-written", 128 + err.args[1])
    except click_exceptions.NoArgsIsHelpError as err:  # `anomaly` alone: show the help
        typer.echo(err.ctx.get_help())
        return 0
    except click_exceptions.UsageError as err:
        return fail(f"{err.format_message()} (see --help)", 2)
    except typer.Abort:
        return fail("aborted", 130)
    except Exception as err:
        if isinstance(err, _failure_types()):
            return fail(first_line(err), 1)
        if as_json:  # a program reads stdout: still one JSON object; the traceback on stderr
            import traceback

            traceback.print_exc()
            return fail(f"internal error: {type(err).__name__}: {first_line(err)}", 1)
        raise
    finally:
        for signum, previous in handled.items():
            signal.signal(signum, previous)
        if data_root is None:
            os.environ.pop(_DATA_ROOT_ENV, None)
        else:
            os.environ[_DATA_ROOT_ENV] = data_root
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

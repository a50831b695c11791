"""Where downloaded data sets live by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ROOT_ENV", "default_data_root"]

#: Environment variable that overrides the default data folder.
DATA_ROOT_ENV = "ANOMALY_DATA_ROOT"


def default_data_root() -> Path:
    """Return the folder that data sets are read from and downloaded to by default.

    Returns
    -------
    pathlib.Path
        ``$ANOMALY_DATA_ROOT`` when that environment variable is set and not empty, otherwise
        ``~/.cache/coreset-meg/data``. The folder is not created here.
    """
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "coreset-meg" / "data"

"""MkDocs hook: the sources of the API pages, laid out as they install.

The package folders sit at the top of the repository (``anomaly/``, ``datasets/``, ...) and install
as ``coreset_meg.anomaly``, ``coreset_meg.datasets``, ... (``pyproject.toml``'s ``package-dir``).
mkdocstrings reads the sources (griffe) by folder, so that ``coreset_meg.datasets.load_table``
needs a ``coreset_meg/datasets/`` folder: this hook builds that tree of links to the folders in
``build/api-sources/``, where ``mkdocs.yml`` points mkdocstrings, before the pages are read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "build" / "api-sources"
NAMESPACE = "coreset_meg"
#: The folders that install as ``coreset_meg.<folder>`` (as in ``pyproject.toml``).
FOLDERS = ("anomaly", "common", "coreset", "datasets", "features", "gan")


@event_priority(100)  # before mkdocstrings reads its paths (hooks otherwise run after plugins)
def on_config(config, **kwargs):
    shutil.rmtree(TREE, ignore_errors=True)
    # The namespace's own files are copied: griffe looks for submodules beside the file a link
    # points to.
    shutil.copytree(ROOT / NAMESPACE, TREE / NAMESPACE, ignore=shutil.ignore_patterns("*.pyc"))
    for folder in FOLDERS:
        target, source = TREE / NAMESPACE / folder, ROOT / folder
        try:
            target.symlink_to(source, target_is_directory=True)
        except OSError:  # no symbolic links here: a copy
            shutil.copytree(source, target)
    return config

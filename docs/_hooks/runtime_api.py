"""Griffe extension (mkdocstrings): ``coreset_meg.anomaly`` documented as it runs.

Parts of the detector's API are completed at import: ``MEGDetector``'s ``__init__`` and the
parameters of its docstring are built from the settings, and the metrics share one parameters
section filled in by a decorator, so their sources do not show them. mkdocstrings reads
``coreset_meg`` once for all the API pages, from its sources (which the data set and GAN pages
need: dataclass fields, defaults as written); this extension replaces the subpackages below by
what inspecting the imported modules finds.
"""

from __future__ import annotations

import griffe

#: Subpackages of ``coreset_meg`` documented from the imported modules.
INSPECTED = ("anomaly",)


class InspectedSubpackages(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if pkg.path != "coreset_meg" or loader.force_inspection:
            return
        inspected = griffe.GriffeLoader(
            search_paths=loader.finder.search_paths,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            force_inspection=True,
        ).load(pkg.path)
        for name in INSPECTED:
            pkg.set_member(name, inspected[name])

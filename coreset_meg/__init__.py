"""coreset-meg: anomaly detection with an energy-based GAN (MEG) trained on core-set batches.

Everything the distribution installs lives in this one namespace, so that it neither shadows nor
is shadowed by another top-level package (Hugging Face's ``datasets``, any ``common``). The
folders stay at the top of the repository; ``pyproject.toml`` maps them here:

- :mod:`coreset_meg.anomaly` (``anomaly/``): the detector, saving and loading, the metrics, the
  command line and the benchmark harness;
- :mod:`coreset_meg.datasets` (``datasets/``): loaders, protocol splits, toy mixtures;
- :mod:`coreset_meg.gan` (``gan/``): the MEG networks, losses and trainer;
- :mod:`coreset_meg.coreset` (``coreset/``): core-set selection (k-center, projections, the
  sampler, SID);
- :mod:`coreset_meg.features` (``features/``): pretrained image features and their disk cache;
- :mod:`coreset_meg.common` (``common/``): internal helpers.

The public names of :mod:`coreset_meg.anomaly` are re-exported here. As there, they are imported
on first use (PEP 562): ``import coreset_meg`` does not import torch or scikit-learn.

>>> import coreset_meg.anomaly
>>> from coreset_meg import MEGDetector
>>> MEGDetector is coreset_meg.anomaly.MEGDetector
True
"""

import os as _os

# A checkout used without installing it (the checkout on PYTHONPATH, or ``python -m`` from its
# root): the subpackages are the folders beside this one. Installed from a wheel they sit in
# this folder; an editable install maps them there (package-dir) and finds them so as well.
if not _os.path.isdir(_os.path.join(__path__[0], "anomaly")):
    __path__.append(_os.path.dirname(_os.path.abspath(__path__[0])))
del _os

from .anomaly import __all__ as _ANOMALY_NAMES
from .anomaly import __version__ as __version__
from .common.lazy import lazy_exports

#: Public name -> the subpackage that defines it.
_SOURCES = dict.fromkeys((n for n in _ANOMALY_NAMES if n != "__version__"), "anomaly")

__all__ = list(_ANOMALY_NAMES)

__getattr__, __dir__ = lazy_exports(globals(), _SOURCES, __all__)

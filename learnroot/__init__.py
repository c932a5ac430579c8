"""learnroot: Deep Taylor Decomposition with learned roots, and an experiment runner around it.

The Python API (:mod:`learnroot.api`): ``from learnroot import explain, evaluate``. It is imported on first
use, so that ``import learnroot`` (and the command line's config checks) does not import torch.
"""

__version__ = "0.1.0"

__all__ = ["explain", "evaluate", "Explanation", "__version__"]

_API = ("explain", "evaluate", "Explanation")


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'learnroot' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))

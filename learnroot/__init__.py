"""learnroot: Deep Taylor Decomposition with learned roots, and an experiment runner around it."""

__version__ = "0.1.0"

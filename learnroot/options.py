"""The options of a run, as plain dataclasses made from the declarations.

Every option is declared once, as a :class:`~learnroot.params.Param`: the fixed groups (model,
dataset, root_opt, paths, the top-level keys) in :mod:`learnroot.groups`, the ``method`` group by
the method declarations (:mod:`learnroot.methods`: the parameters every method reads plus each
method's own) and the ``metrics`` group by the metric declarations (:mod:`learnroot.metrics`). This
module assembles them into :class:`MethodOptions`, :class:`MetricsOptions` and :class:`RunOptions`.

The dataclasses know nothing of Hydra or torch (importing this module imports neither): science
modules take them as arguments, :mod:`learnroot.config` registers :class:`RunOptions` as the Hydra
schema, and the CLI is the only place that turns a ``DictConfig`` into instances. Every field has a
default, so each class can be built by hand in tests and notebooks; the defaults *are* the default
presets of ``conf/`` (a test composes each group's default preset and compares).
"""
from __future__ import annotations

from .groups import (CIFAR_RESNET_DEPTHS, DATASET_PARTS, RUN_PARAMS, DatasetOptions, LayerRootOptions, ModelOptions,
                     PathsOptions, RootOptOptions)
from .methods import COMMON_PARAMS as METHOD_COMMON
from .methods import REGISTRY as METHODS
from .metrics.registry import COMMON_PARAMS as METRIC_COMMON
from .metrics import REGISTRY as METRICS
from .params import Param, merge_params, options_class

__all__ = ["ModelOptions", "DatasetOptions", "MethodOptions", "LayerRootOptions", "RootOptOptions", "MetricsOptions",
           "PathsOptions", "RunOptions", "CIFAR_RESNET_DEPTHS", "DATASET_PARTS", "method_params", "metric_params"]


def method_params() -> list[Param]:
    """The ``method`` group's parameters: the common ones, then each registered method's, each once."""
    return merge_params([METHOD_COMMON, *(method.params for method in METHODS.values())], "methods")


def metric_params() -> list[Param]:
    """The ``metrics`` group's parameters: the shared settings, then each registered metric's, each once."""
    return merge_params([METRIC_COMMON, *(metric.params for metric in METRICS.values())], "metrics")


def _constraints(declarations) -> tuple:
    return tuple(dict.fromkeys(item for declaration in declarations for item in declaration.constraints))


MethodOptions = options_class(
    "MethodOptions", method_params(), "An attribution method and the parameters of the registered methods "
    "(each declared by the methods that read it: ``learnroot-run --help`` says which).",
    constraints=_constraints(METHODS.values()))

MetricsOptions = options_class(
    "MetricsOptions", metric_params(), "Which evaluation metrics a run computes, and their settings (each declared by "
    "its metric).", constraints=_constraints(METRICS.values()))

RunOptions = options_class(
    "RunOptions",
    (Param("model", ModelOptions, None, "the classifier and its input preparation"),
     Param("dataset", DatasetOptions, None, "where the images come from"),
     Param("method", MethodOptions, None, "the attribution method"),
     Param("root_opt", RootOptOptions, None, "the learned root's hyperparameters (method ours)"),
     Param("metrics", MetricsOptions, None, "the evaluation"),
     Param("paths", PathsOptions, None, "output, cache and shared-data folders"),
     *RUN_PARAMS),
    "One ``learnroot-run`` invocation: every group, then the top-level keys.")

"""``learnroot-eval``: top-1 / top-5 accuracy of a configured model on a configured dataset.

A check that the weights, the preprocessing and the dataset's labels agree before explaining
anything: ``learnroot-eval model=... dataset=... [dataset.limit=N] [key=value ...]`` composes the
same config tree as ``learnroot-run`` and prints one line::

    top-1 99.23 % top-5 100.00 % on 10000 images (lenet5_mnist, mnist)

(top-5 only when the model has at least 5 outputs). Unlike ``learnroot-run`` it looks at every
image unless ``dataset.limit=N`` is given, and feeds 256 images per batch unless ``batch_size=N``
is. A sample whose class is a set of outputs (``coco_seg``: ``candidates``) counts as correct at
``k`` when one of the top ``k`` outputs lies in the set. Unreadable and set-aside images are
counted on stderr. A bad configuration prints ``learnroot-eval: error: ...`` and exits with 2.

The science part (:func:`count_correct`, :func:`evaluate_accuracy`) knows nothing of Hydra.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data import DataError, collate
from .options import RunOptions

PROG = "learnroot-eval"
USAGE = (f"usage: {PROG} [group=option ...] [key=value ...]\n"
         f"  e.g. {PROG} model=resnet50 dataset=imagenet dataset.root=/path/to/val "
         "dataset.class_index=/path/to/imagenet_class_index.json dataset.limit=1000\n"
         "Prints the model's top-1 (and top-5) accuracy on the dataset; every image unless dataset.limit=N.")
EVAL_BATCH_SIZE = 256


@dataclass
class Accuracy:
    """Counts of one evaluation.

    Attributes
    ----------
    n : int
        Images evaluated.
    correct : dict
        ``k -> number of images whose class is among the top k outputs``.
    skipped : list of dict
        ``{"id", "path", "reason"}`` of the images not evaluated (unreadable or set aside).
    """

    n: int = 0
    correct: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def percent(self, k: int) -> float:
        """Top-``k`` accuracy in percent (NaN without images)."""
        return 100.0 * self.correct[k] / self.n if self.n else float("nan")


def count_correct(logits: torch.Tensor, label: torch.Tensor, candidates: Optional[torch.Tensor] = None,
                  ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """Number of samples whose class is among the top ``k`` outputs, for each ``k``.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` model outputs.
    label : torch.Tensor
        ``(B,)`` output index of each sample's class (ignored where ``candidates`` is given).
    candidates : torch.Tensor, optional
        ``(B, K)`` bool: the outputs that name each sample's class (any of them counts).
    ks : sequence of int
        The ``k`` to count; each must be ``<= K``.

    Returns
    -------
    dict
        ``k -> count``.

    Raises
    ------
    DataError
        Labels outside ``[0, K)`` without candidates.
    """
    outputs = logits.shape[1]
    if candidates is None:
        if len(label) and not (0 <= int(label.min()) and int(label.max()) < outputs):
            raise DataError(f"labels must be output indices in [0, {outputs}), found {int(label.min())}.."
                            f"{int(label.max())} (a dataset without labels, or a model with too few outputs)")
        candidates = torch.nn.functional.one_hot(label, outputs).bool()
    top = logits.topk(max(ks), dim=1).indices
    hits = candidates.gather(1, top)
    return {k: int(hits[:, :k].any(1).sum()) for k in ks}


def evaluate_accuracy(model: torch.nn.Module, dataset: Dataset, batch_size: int = EVAL_BATCH_SIZE,
                      device: torch.device | str = "cpu", num_workers: int = 0, ks: Sequence[int] = (1, 5),
                      progress: bool = True) -> Accuracy:
    """Top-``k`` accuracy of ``model`` on ``dataset`` (items as :func:`~learnroot.data.collate` expects).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode.
    dataset : Dataset
        Items with ``image`` and ``label`` (or ``candidates``); its ``excluded`` attribute, when
        present, is reported as skipped.
    batch_size, num_workers : int
        DataLoader settings.
    device : torch.device or str
        Where the model runs.
    ks : sequence of int
        Which top-``k`` to count; those above the number of outputs are dropped.
    progress : bool
        Show a tqdm bar on stderr (when it is a terminal).

    Returns
    -------
    Accuracy
    """
    result = Accuracy(skipped=list(getattr(dataset, "excluded", [])))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    with torch.inference_mode():
        for batch in tqdm(loader, desc=PROG, unit="batch", disable=None if progress else True):
            result.skipped += batch["errors"]
            if not batch["id"]:
                continue
            logits = model(batch["image"].to(device))
            candidates = batch.get("candidates")
            usable = tuple(k for k in ks if k <= logits.shape[1])
            counts = count_correct(logits, batch["label"].to(device),
                                   None if candidates is None else candidates.to(device), usable)
            result.n += len(logits)
            for k, count in counts.items():
                result.correct[k] = result.correct.get(k, 0) + count
    return result


def evaluate_options(options: RunOptions, progress: bool = True) -> Accuracy:
    """Build the model and dataset the options describe and evaluate the accuracy.

    Raises
    ------
    DataError, ModelError, RunError
        One-line problems with the configuration.
    """
    from .data import build_dataset, take_shard
    from .models import build_model, num_outputs, preprocess_of
    from .runner import resolve_device, seed_everything

    seed_everything(options.seed)
    device = resolve_device(options.device)
    model = build_model(options.model, options.dataset, options.paths.cache_dir).to(device)
    dataset = take_shard(build_dataset(options.dataset, preprocess_of(options.model),
                                       num_outputs(options.model, options.dataset), options.paths.cache_dir),
                         options.dataset.shard)
    return evaluate_accuracy(model, dataset, options.batch_size, device, options.dataset.num_workers,
                             progress=progress)


def format_result(result: Accuracy, options: RunOptions) -> str:
    """The printed line: ``top-1 X.XX % [top-5 Y.YY % ]on N images (model, dataset)``."""
    shown = "".join(f"top-{k} {result.percent(k):.2f} % " for k in sorted(result.correct))
    return f"{shown}on {result.n} images ({options.model.name}, {options.dataset.name})"


def _has_key(overrides: list[str], key: str) -> bool:
    return any(item.lstrip("+~").split("=", 1)[0] == key for item in overrides)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-eval`` (exit 2 on a bad configuration)."""
    from .cli import expected_errors
    from .config import compose_options

    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return
    try:
        flags = [arg for arg in args if arg.startswith("-")]
        if flags:
            raise DataError(f"unknown option {flags[0]} (only key=value overrides; see --help)")
        overrides = args + ([] if _has_key(args, "dataset.limit") else ["dataset.limit=null"]) \
            + ([] if _has_key(args, "batch_size") else [f"batch_size={EVAL_BATCH_SIZE}"])
        options = compose_options(*overrides)
        result = evaluate_options(options)
        if not result.n:
            raise DataError(f"no image could be evaluated ({len(result.skipped)} skipped)")
    except expected_errors() as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if result.skipped:
        first = result.skipped[0]
        print(f"{PROG}: note: {len(result.skipped)} image(s) skipped, e.g. {first['path']}: {first['reason']}",
              file=sys.stderr)
    print(format_result(result, options))


if __name__ == "__main__":
    main()

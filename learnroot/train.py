"""``learnroot-train``: (re)train the embedded small CNN on the shapes benchmark, or a real-data ViT on the
train part of its dataset, and write its weights.

A thin command line around :func:`learnroot.models.small_cnn.train_and_save` and
:func:`learnroot.models.real_vit.train_and_save`: the options come from the shipped config tree with the
same overrides as ``learnroot-run`` (:func:`learnroot.config.compose_options`), e.g.
``model.train_seed=1`` or ``dataset.n_train=300``; ``learnroot-train setup=vit_mnist`` (or
``setup=vit_cifar10``) trains the real-data ViT of that setup (about 10 and 30 minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

PROG = "learnroot-train"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``learnroot-train``."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Train the embedded small CNN on the shapes benchmark (generated in the cache if missing), stopping "
        "once the validation accuracy reaches model.train_target_accuracy, and write its weights with their "
        "training record. With the default options this reproduces the weights shipped in the package "
        "(learnroot/weights/small_cnn.pt), which learnroot-run uses; about a minute on 2 CPU cores. "
        "setup=vit_mnist or setup=vit_cifar10 trains that real-data ViT on the train part of its dataset "
        "(learnroot/weights/vit_mnist.pt, vit_cifar10.pt are the shipped results)."),
        epilog="Examples: learnroot-train -o outputs/my_cnn.pt model.train_seed=1, then "
               "learnroot-run model.weights=outputs/my_cnn.pt (outputs/ is ignored by git; a relative -o is "
               "taken from the current folder). Overrides as for learnroot-run (model.train_*, "
               "dataset.seed, dataset.n_train, paths.cache_dir).")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    parser.add_argument("-o", "--output", default=None,
                        help="weights file to write (default: the cache file learnroot-run reads for these options "
                             "when no shipped weights apply, <paths.cache_dir>/models/small_cnn-<key>.pt)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of ``learnroot-train`` (exit 2 on a bad configuration)."""
    args = parse_args(argv)
    from .openmp import prefer_passive_wait
    prefer_passive_wait()
    from .config import ConfigError, compose_options
    try:
        options = compose_options(*args.overrides)
        from .models.real_vit import REAL_VITS
        if options.model.name in REAL_VITS:
            return train_real_vit(options, args.output)
        if options.model.name != "small_cnn" or options.dataset.name != "shapes":
            raise ConfigError("learnroot-train trains model=small_cnn on dataset=shapes, or the real-data ViTs "
                              "(setup=vit_mnist, setup=vit_cifar10)")
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    from .data import DataError
    from .models.small_cnn import SHIPPED_WEIGHTS, small_cnn_file, small_cnn_path, train_and_save
    cache = options.paths.cache_dir
    output = Path(args.output).expanduser() if args.output else small_cnn_path(options.model, options.dataset, cache)
    try:
        _, meta = train_and_save(options.model, options.dataset, cache, output)
    except DataError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"small_cnn: validation accuracy {meta['val_accuracy']:.4f} after {meta['epochs']} epoch(s), "
          f"{meta['seconds']:.0f} s; weights in {output}")
    used = small_cnn_file(options.model, options.dataset, cache)
    if used.resolve() != output.resolve():
        where = "the shipped weights" if used == SHIPPED_WEIGHTS else str(used)
        print(f"{PROG}: note: learnroot-run with these options reads {where}; use model.weights={output} to run "
              f"this model", file=sys.stderr)
    if meta["val_accuracy"] < options.model.train_target_accuracy:
        print(f"{PROG}: warning: the target accuracy {options.model.train_target_accuracy} was not reached "
              f"within model.train_epochs={options.model.train_epochs}", file=sys.stderr)
        raise SystemExit(1)


def train_real_vit(options, output: Optional[str]) -> None:
    """Train the real-data ViT ``options.model.name`` on the train part of its dataset and write it to
    ``output`` (default: the cache file that ``learnroot-run`` reads for these options); exit 2 on a
    dataset or part that does not fit."""
    from .config import ConfigError
    from .data import DataError
    from .models.real_vit import REAL_VITS, real_vit_path, shipped_path, train_and_save
    spec = REAL_VITS[options.model.name]
    try:
        if options.dataset.name != spec.dataset or not options.dataset.train_share:
            raise ConfigError(f"model={options.model.name} trains on dataset={spec.dataset} with "
                              f"dataset.train_share > 0 (setup={options.model.name})")
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    path = Path(output).expanduser() if output else real_vit_path(options.model, options.dataset.train_share,
                                                                  options.paths.cache_dir)
    try:
        _, meta = train_and_save(options.model, options.dataset, path)
    except DataError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{options.model.name}: accuracy {meta['tune_accuracy']:.4f} on the tune part ({meta['images']['tune']} "
          f"images), {meta['test_accuracy']:.4f} on the test part ({meta['images']['test']}) after {meta['epochs']} "
          f"epoch(s) on {meta['images']['train']} images, {meta['seconds']:.0f} s; weights in {path}")
    if path.resolve() == shipped_path(options.model.name).resolve():
        print(f"{PROG}: note: these are now the shipped weights of {options.model.name}", file=sys.stderr)


if __name__ == "__main__":
    main()

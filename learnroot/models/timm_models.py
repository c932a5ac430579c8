"""timm's CNNs by name (``model=timm model.arch=NAME``; needs the ``timm`` extra: ``pip install "learnroot[timm]"``).

``model.arch`` is any name ``timm.create_model`` accepts, with or without a pretrained tag
(``resnet50``, ``resnet50.a1_in1k``, ``efficientnet_b0.ra_in1k``). Models with attention or LayerNorm
(vision transformers, ConvNeXt, ...) are refused: the CNN rules do not cover those layers.

Weights are never downloaded. ``model.weights=auto`` reads the file that timm would download from
the local caches: the Hugging Face hub cache (``$HF_HOME/hub/models--timm--<name>.<tag>/snapshots/*/
model.safetensors`` or ``pytorch_model.bin``), else the torch hub cache file of the weights' URL; a
missing file stops with one line naming both places. ``PATH`` reads a ``.safetensors`` file or a state
dict (also nested under ``state_dict`` / ``model``, ``module.`` stripped); ``random`` keeps timm's
initialisation, with a warning.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from torch import nn

from ..groups import ModelOptions
from .weights import ModelError, hub_checkpoint, load_state_dict, random_weights_warning

log = logging.getLogger(__name__)

__all__ = ["timm_available", "check_timm_arch", "timm_weight_files", "timm_model", "UNSUPPORTED_LAYERS"]

#: Module class names the CNN rules have no rule for: such timm models are refused.
UNSUPPORTED_LAYERS = ("Attention", "LayerNorm", "MultiheadAttention", "GroupNorm")

#: Files of a timm weights repository on the Hugging Face hub, preferred first.
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_available() -> bool:
    """Whether timm can be imported."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError('model=timm needs the timm package: pip install "learnroot[timm]" (or pip install timm)') \
            from None
    return timm


def check_timm_arch(arch: str) -> None:
    """Refuse a name timm does not know (with the closest one).

    Raises
    ------
    ModelError
        timm missing, no ``arch``, or an unknown model name (one line).
    """
    from difflib import get_close_matches
    timm = _timm()
    if not arch:
        raise ModelError("model=timm needs model.arch=NAME (a timm model, e.g. resnet50.a1_in1k, efficientnet_b0)")
    base = arch.split(".", 1)[0]
    names = timm.list_models()
    if base not in names:
        match = get_close_matches(base, names, n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise ModelError(f"model.arch={arch!r} is not a timm model{hint}")


def timm_weight_files(arch: str) -> tuple[list[Path], str]:
    """The cached weight files that exist for ``arch`` (preferred first), and a description of where they are
    looked for (for the error message)."""
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return [], f"no pretrained weights known to timm for {arch}"
    found, places = [], []
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache
        for name in HF_FILES:
            path = try_to_load_from_cache(cfg.hf_hub_id, name)
            if isinstance(path, str):
                found.append(Path(path))
        folder = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.replace('/', '--')}" / "snapshots"
        places.append(f"{folder}/<revision>/{HF_FILES[0]}")
    if cfg.url:
        path = hub_checkpoint(Path(cfg.url).name)
        if path.is_file():
            found.append(path)
        places.append(str(path))
    return found, " or ".join(places)


def _check_layers(model: nn.Module, arch: str) -> None:
    names = sorted({type(module).__name__ for module in model.modules()
                    if any(word in type(module).__name__ for word in UNSUPPORTED_LAYERS)})
    if names:
        raise ModelError(f"timm model {arch} has layers the CNN rules do not cover ({', '.join(names[:4])}); "
                         "model=timm takes timm's CNNs")


def timm_model(options: ModelOptions, check_layers: bool = True) -> nn.Module:
    """A timm CNN (``model.arch``) with local weights (or random ones, with a warning), in eval mode.

    Raises
    ------
    ModelError
        timm not installed, unknown model, unsupported layers, weights missing (naming where they were looked
        for), unreadable or not fitting.
    """
    timm = _timm()
    check_timm_arch(options.arch)
    try:
        model = timm.create_model(options.arch, pretrained=False, num_classes=options.num_classes or 1000,
                                  **dict(options.kwargs or {}))
    except (TypeError, RuntimeError, ValueError) as error:
        raise ModelError(f"timm refuses {options.arch} with model.kwargs={dict(options.kwargs or {})}: "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if check_layers:
        _check_layers(model, options.arch)
    if options.weights == "random":
        random_weights_warning(options.arch)
        return model.eval()
    file: Optional[Path]
    if options.weights in ("auto", ""):
        found, places = timm_weight_files(options.arch)
        if not found:
            raise ModelError(f"weights for timm {options.arch} not found: put them at {places}, or pass "
                             "model.weights=PATH (model.weights=random for a smoke test)")
        file = found[0]
    else:
        file = Path(options.weights).expanduser()
    _warn_preprocessing(model, options)
    load_state_dict(model, str(file), options.arch)
    return model.eval()


def _warn_preprocessing(model: nn.Module, options: ModelOptions) -> None:
    """Log when the configured mean, std or crop differ from those of the timm weights."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = (cfg.get("input_size") or (0, 0, 0))[-1]
    mean, std = tuple(cfg.get("mean") or ()), tuple(cfg.get("std") or ())
    def same(ours, theirs) -> bool:
        return not theirs or tuple(round(v, 4) for v in ours) == tuple(round(v, 4) for v in theirs)

    differs = [text for text, agrees in ((f"mean {list(mean)}", same(options.mean, mean)),
                                          (f"std {list(std)}", same(options.std, std)),
                                          (f"crop {size}", not size or options.crop == size)) if not agrees]
    if differs:
        log.warning("timm %s was trained with %s; the run uses model.mean=%s model.std=%s model.crop=%d",
                    options.arch, ", ".join(differs), list(options.mean), list(options.std), options.crop)

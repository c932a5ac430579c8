"""How many perturbed images the metrics may put through the model at once, from the memory available.

Pixel flipping, perturbation and region perturbation evaluate hundreds of perturbed copies of each
image in chunks (``metrics.pf_chunk``). A chunk costs about :func:`bytes_per_image` times its size:
twice the largest input-plus-output of one layer of a one-image forward pass (the factor covers what
a forward pass keeps alive besides: skip connections, the allocator's slack; measured: VGG16 peaks at
1.5 x, MobileNetV2 at 1.4 x on the CPU) plus three copies of the input (the image, the baseline and
the perturbed image). :func:`chunk_size` picks the largest power of two whose cost fits in a share of
the memory available now (:data:`CPU_SHARE` of the system's available memory, or of the cgroup's
limit; :data:`CUDA_SHARE` of the device's free memory), at most ``metrics.pf_chunk``. Powers of two
keep the chunk, and so the floating-point order of the model's arithmetic, the same on machines
with similar memory.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

#: Shares of the available memory the metrics' chunks may use (the rest is for the model, the
#: attribution and other programs).
CPU_SHARE, CUDA_SHARE = 0.25, 0.5
#: Safety factor over the largest input + output of one layer.
FORWARD_FACTOR = 2.0


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> Optional[int]:
    """Memory left under this process's cgroup limit (v2 or v1), if there is a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:
            return max(0, int(limit) - usage)
    return None


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory available to this process now: the CUDA device's free memory, or on the CPU the smaller of
    the system's available memory and what the cgroup limit leaves (``None`` when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    values = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    return min(values) if values else None


def bytes_per_image(model: nn.Module, image: torch.Tensor) -> int:
    """Estimated memory of one more image in a chunk of the metrics' forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (eval mode).
    image : torch.Tensor
        ``(1, C, H, W)`` one input on the model's device.
    """
    largest = 0

    def hook(module, inputs, output):
        nonlocal largest
        tensors = [item for item in (*inputs, output) if torch.is_tensor(item)]
        storages = {item.untyped_storage().data_ptr(): item.untyped_storage().nbytes() for item in tensors}
        largest = max(largest, sum(storages.values()))

    leaves = [module for module in model.modules() if not list(module.children())] or [model]
    handles = [module.register_forward_hook(hook) for module in leaves]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return int(FORWARD_FACTOR * largest + 3 * image.numel() * image.element_size())


def chunk_size(model: nn.Module, image: torch.Tensor, upper: int, available: Optional[int] = None) -> tuple[int, dict]:
    """The perturbed images per forward pass: the largest power of two that fits, at most ``upper``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    image : torch.Tensor
        ``(1, C, H, W)`` one input on the model's device.
    upper : int
        ``metrics.pf_chunk``.
    available : int, optional
        Bytes available (default :func:`available_bytes` of the image's device).

    Returns
    -------
    chunk : int
        Between 1 and ``upper``.
    details : dict
        ``per_image_mb``, ``budget_mb`` (``None`` when the available memory is unknown: then ``upper``).
    """
    per_image = bytes_per_image(model, image)
    available = available_bytes(image.device) if available is None else available
    details = {"per_image_mb": per_image / 2 ** 20, "budget_mb": None}
    if available is None:
        return upper, details
    budget = available * (CUDA_SHARE if image.device.type == "cuda" else CPU_SHARE)
    details["budget_mb"] = budget / 2 ** 20
    fits = max(1, int(budget // max(per_image, 1)))
    return max(1, min(upper, 2 ** int(math.log2(fits)))), details

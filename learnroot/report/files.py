"""Reading the files inside one run folder: ``per_sample.csv``, ``curves.csv``, ``manifest.json``,
``segments.json`` and the ``relevance/<id>.npz`` arrays (shared by the tables, ``learnroot-figures``
and ``learnroot-report``).

Every reader tolerates a damaged or missing file: it returns ``None`` (or an empty result) and the
caller lists what it could not read. The readers of per-sample files take one run folder or the list of
folders of a merged shard set (:attr:`learnroot.report.runs.Run.folders`) and read them as one run.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

__all__ = ["Folders", "folder_list", "read_samples", "read_curve_rows", "read_json", "read_npz", "readable_npz", "npz_keys", "relevance_ids",
           "common_ids", "channel_sum", "display_image", "model_normalisation", "input_image"]


#: One run folder, or the folders of a merged shard set.
Folders = Union[Path, str, Sequence[Path]]


def folder_list(folder: Folders) -> list[Path]:
    """``folder`` as a list of paths (a single folder -> ``[folder]``)."""
    return [Path(item) for item in folder] if isinstance(folder, (list, tuple)) else [Path(folder)]


def _read_table(file: Path) -> Optional[pd.DataFrame]:
    if not file.is_file():
        return None
    try:
        return pd.read_csv(file, dtype={"id": str})
    except (OSError, ValueError):
        return None


def _read_tables(folder: Folders, name: str) -> Optional[pd.DataFrame]:
    """The table ``name`` of each folder, concatenated; ``None`` when any of them is missing or unreadable (a
    merged shard set is read whole or not at all)."""
    frames = [_read_table(path / name) for path in folder_list(folder)]
    if not frames or any(frame is None for frame in frames):
        return None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_samples(folder: Folders, order: Optional[Sequence[str]] = None) -> Optional[pd.DataFrame]:
    """``per_sample.csv`` of a run folder (``id`` as text), or ``None`` when it is missing or unreadable; of
    several folders (a merged shard set), their rows together; with ``order``, the rows sorted by the position of
    their id in it (ids not in it last, in their order)."""
    frame = _read_tables(folder, "per_sample.csv")
    if frame is None or not order or "id" not in frame:
        return frame
    position = {sample: index for index, sample in enumerate(order)}
    keys = frame["id"].map(lambda sample: position.get(sample, len(position))).to_numpy()
    return frame.iloc[np.argsort(keys, kind="stable")].reset_index(drop=True)


def read_curve_rows(folder: Folders) -> Optional[pd.DataFrame]:
    """``curves.csv`` of a run folder (per sample, curve kind and step), or ``None``; of several folders, their
    rows together."""
    return _read_tables(folder, "curves.csv")


def read_json(file: Path) -> Optional[dict]:
    """A JSON object from ``file``, or ``None`` when it is missing, damaged or not an object."""
    try:
        data = json.loads(Path(file).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, (dict, list)) else None


def read_npz(folder: Folders, sample: str, keys: Optional[tuple] = None) -> dict:
    """The arrays of ``relevance/<sample>.npz`` of a run folder as a plain dict (only ``keys`` when given
    and present: a file holds layer maps and the class-sensitivity arrays besides); of several folders, the
    first that holds the file."""
    paths = [path / "relevance" / f"{sample}.npz" for path in folder_list(folder)]
    with np.load(next((path for path in paths if path.is_file()), paths[0])) as data:
        return {key: data[key] for key in data.files if keys is None or key in keys}


def readable_npz(path: Path) -> bool:
    """Whether a relevance file opens and holds non-empty ``relevance`` and ``input`` arrays."""
    try:
        with np.load(path) as data:
            return data["relevance"].size > 0 and data["input"].size > 0
    except Exception:  # noqa: BLE001 - zip, pickle and value errors all mean a damaged file
        return False


def npz_keys(path: Path) -> list[str]:
    """The array names of an ``.npz`` file (``[]`` when it cannot be opened)."""
    try:
        with np.load(path) as data:
            return list(data.files)
    except Exception:  # noqa: BLE001 - a damaged file
        return []


def relevance_ids(folder: Folders) -> list[str]:
    """Sample ids with a ``relevance/<id>.npz`` file in a run folder (in any of several folders), sorted."""
    return sorted({file.stem for path in folder_list(folder) for file in (path / "relevance").glob("*.npz")})


def common_ids(paths: list[Path]) -> list[str]:
    """Sample ids with a ``relevance/<id>.npz`` file in every run folder, sorted."""
    sets = [set(relevance_ids(path)) for path in paths]
    return sorted(set.intersection(*sets)) if sets else []


def channel_sum(relevance: np.ndarray) -> np.ndarray:
    """``(H, W)`` channel sum of a ``(C, H, W)`` (or ``(C, ..., H, W)``) relevance array; non-finite values
    count as 0."""
    relevance = np.nan_to_num(np.asarray(relevance, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return relevance.reshape(relevance.shape[0], *relevance.shape[-2:]).sum(0)


def display_image(model_input: np.ndarray, mean, std, value_range) -> np.ndarray:
    """Undo the model's normalisation for display (:meth:`learnroot.normalisation.Normalisation.display`).

    Parameters
    ----------
    model_input : numpy.ndarray
        ``(C, H, W)`` input as fed to the model.
    mean, std : sequence of float
        Per-channel normalisation (``.hydra/config.yaml`` ``model.mean`` / ``model.std``).
    value_range : sequence of float
        ``[low, high]`` raw pixel range (``model.value_range``).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` RGB for 3 channels, else ``(H, W)`` grey (channel mean), in ``[0, 1]``.
    """
    from learnroot.normalisation import Normalisation
    return Normalisation(list(mean), list(std), tuple(value_range)).display(model_input)


def model_normalisation(folder: Path) -> tuple[list, list, list]:
    """``(mean, std, value_range)`` of the run's model (``.hydra/config.yaml``; read once per folder and
    modification time)."""
    file = Path(folder) / ".hydra" / "config.yaml"
    return _normalisation(str(file.resolve()), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _normalisation(file: str, mtime: int) -> tuple[list, list, list]:
    model = OmegaConf.to_container(OmegaConf.load(file), resolve=False)["model"]
    return list(model["mean"]), list(model["std"]), list(model["value_range"])


def input_image(folder: Folders, data: dict) -> np.ndarray:
    """The input of a relevance file (``data["input"]``) as shown to a person (:func:`display_image`); the
    model's normalisation is read from the (first) run folder."""
    mean, std, value_range = model_normalisation(folder_list(folder)[0])
    model_input = data["input"]
    return display_image(model_input.reshape(model_input.shape[0], *model_input.shape[-2:]), mean, std, value_range)

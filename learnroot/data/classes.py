"""Class names of a model's outputs, read from a file, and the lookup of class folders by name.

Three formats are read (``model.classes``, ``dataset.class_index``):

- a text file with one class name per line (line ``i`` names output ``i``; blank lines at the end are ignored);
- a JSON list of names (``["tench", "goldfish", ...]``);
- a JSON object in ``imagenet_class_index.json`` style, ``{"0": ["n01440764", "tench"], ...}`` (an id and a
  name per index), or ``{"0": "tench", ...}``, or ``{"tench": 0, ...}`` (name -> index).

A class folder is looked up by its exact name (a WordNet id, or a class name), else by its name with case,
spaces, ``_`` and ``-`` ignored (``great_white_shark`` finds ``great white shark``). A name that stands for
two outputs (ImageNet has two ``crane`` and two ``maillot`` classes) finds neither: such folders must be
named by the class's id.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClassNames", "ClassLookup", "ClassFileError", "read_classes", "normalise"]


class ClassFileError(Exception):
    """A class file that cannot be read; ``str(error)`` is one line (the data registry reports it as a
    :class:`~learnroot.data.folder.DataError`)."""


def normalise(name: str) -> str:
    """``name`` with case, runs of spaces, ``_`` and ``-`` ignored (``Great_White-shark`` -> ``great white shark``)."""
    return re.sub(r"[\s_-]+", " ", str(name)).strip().lower()


class ClassLookup(dict):
    """``{key: output index}`` of the ids and names of a class file; ``in`` and ``[]`` also find a key by its
    :func:`normalise` form. A name that stands for more than one output is not found (:attr:`ambiguous`
    lists those names with their indices)."""

    def __init__(self, items, ambiguous: dict, source: str):
        super().__init__(items)
        self.ambiguous = ambiguous
        self.source = source
        self.loose: dict = {}
        for key, index in self.items():
            self.loose.setdefault(normalise(key), set()).add(index)
        for key, indices in ambiguous.items():
            self.loose.setdefault(normalise(key), set()).update(indices)

    def _find(self, key):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        found = self.loose.get(normalise(key), set())
        return next(iter(found)) if len(found) == 1 else None

    def __contains__(self, key) -> bool:
        return self._find(key) is not None

    def __getitem__(self, key):
        index = self._find(key)
        if index is None:
            raise KeyError(key)
        return index


@dataclass(frozen=True)
class ClassNames:
    """The class names of a model's outputs.

    Attributes
    ----------
    names : tuple of str
        The display name of each output index (``""`` for an index the file does not name).
    ids : tuple of str
        The id of each output (the WordNet id of ``imagenet_class_index.json``; else the name).
    source : str
        The file they were read from.
    """

    names: tuple
    ids: tuple
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lookup(self) -> ClassLookup:
        """``{id or name: output index}`` (see :class:`ClassLookup`): ids first, then the names that are not
        ids; a name shared by two outputs is left out (and refused when a folder uses it)."""
        items: dict = {}
        for index, key in enumerate(self.ids):
            if key:
                items.setdefault(key, index)
        by_name: dict = {}
        for index, name in enumerate(self.names):
            if name:
                by_name.setdefault(name, set()).add(index)
        ambiguous = {}
        for name, indices in by_name.items():
            if name in items:
                continue
            if len(indices) == 1:
                items[name] = next(iter(indices))
            else:
                ambiguous[name] = indices
        return ClassLookup(items.items(), ambiguous, self.source)

    def name(self, index: int) -> str:
        """The name of output ``index`` (``""`` when unknown)."""
        return self.names[index] if 0 <= index < len(self.names) else ""


def _from_json(raw, source: str) -> tuple[list, list]:
    if isinstance(raw, list):
        names = [str(item) for item in raw]
        return names, names
    if not isinstance(raw, dict) or not raw:
        raise ValueError("expected a list of names or an object")
    if all(isinstance(value, int) and not isinstance(value, bool) for value in raw.values()):
        raw = {str(index): name for name, index in raw.items()}  # {"tench": 0, ...}
    entries = {int(key): value for key, value in raw.items()}
    if min(entries) < 0:
        raise ValueError("negative class index")
    names, ids = [""] * (max(entries) + 1), [""] * (max(entries) + 1)
    for index, value in entries.items():
        if isinstance(value, (list, tuple)) and value:
            ids[index], names[index] = str(value[0]), str(value[-1])
        elif isinstance(value, str):
            ids[index] = names[index] = value
        else:
            raise ValueError(f"entry {index} is neither a name nor [id, name]")
    return names, ids


def read_classes(path: str) -> ClassNames:
    """Read a class file (text or JSON, see the module's docstring).

    Raises
    ------
    ClassFileError
        Missing, unreadable or malformed file (one line).
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClassFileError(f"class file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClassFileError(f"cannot read class file {file}: {error}") from None
    stripped = text.lstrip()
    if file.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            names, ids = _from_json(json.loads(text), str(file))
        except (ValueError, TypeError, AttributeError) as error:
            raise ClassFileError(f"class file {file} is neither a JSON list of names nor in imagenet_class_index.json "
                         f"format ({{\"0\": [\"n01440764\", \"tench\"], ...}}): {error}") from None
    else:
        names = [line.strip() for line in text.rstrip().splitlines()]
        if not names or any(not name for name in names):
            raise ClassFileError(f"class file {file} must name one class per line, without blank lines")
        ids = names
    return ClassNames(tuple(names), tuple(ids), str(file))

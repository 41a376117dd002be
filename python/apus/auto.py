"""``import apus.auto``: lets ``import`` find Swift files.

After this import, ``from handlers import pricing`` (or ``import pricing``) finds
``pricing.swift`` beside where a ``pricing.py`` would be, compiles it with
``apus.build`` (cached) and imports the result. A ``.py`` file of the same name wins.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

from . import build


class SwiftFinder(importlib.abc.MetaPathFinder):
    """Finds ``NAME.swift`` on the parent package's ``__path__`` (or ``sys.path``)."""

    def find_spec(self, fullname, path, target=None):
        leaf = fullname.rpartition(".")[2]
        for folder in path if path is not None else sys.path:
            candidate = os.path.join(folder or ".", leaf + ".swift")
            if os.path.isfile(candidate):
                return importlib.machinery.ModuleSpec(fullname, SwiftLoader(candidate), origin=candidate)
        return None


class SwiftLoader(importlib.abc.Loader):
    """Compiles the Swift file, then hands the extension module to CPython's own loader."""

    def __init__(self, source: str):
        self.source = source

    def create_module(self, spec):
        library = build(self.source)
        self._extension = importlib.machinery.ExtensionFileLoader(spec.name, str(library))
        spec.origin = str(library)
        return self._extension.create_module(spec)

    def exec_module(self, module):
        self._extension.exec_module(module)


def install() -> None:
    """Adds the finder after the standard ones (so ``.py`` files win); idempotent."""
    if not any(isinstance(finder, SwiftFinder) for finder in sys.meta_path):
        sys.meta_path.append(SwiftFinder())


install()

"""pydicom without its pixel decoders until pixels are decoded by pydicom (issue 21).

pydicom 3.0 imports every pixel decoder at import time (``pydicom/config.py`` imports each
``pixel_data_handlers`` module, ``pydicom/dataset.py`` imports ``pydicom.pixels``, which loads
the decoder registry, Pillow's colour management and, through ``pydicom.data``, urllib, http,
ssl and email): about three quarters of the cost of ``import pydicom``. rtqa reads RT Dose pixel
data itself when it is stored natively (:func:`rtqa.io.dose.read_dose`), so a check needs none
of that.

:func:`install`, called by :mod:`rtqa.io` before it imports pydicom, puts an import hook in
front of ``sys.meta_path`` while pydicom is first imported: the modules named in
:data:`DEFERRED` (and their submodules) are then created as stand-ins, and the names pydicom
imports from them (``from pydicom.pixels import pixel_array``) as forwarding callables. The
first use of a stand-in, a call of a forwarding callable, a later import of any deferred module
by anyone, or :func:`materialize` imports the real modules (once), and every stand-in forwards
to them from then on: behaviour is pydicom's own, only later.

Only for the pydicom versions this was checked against (:data:`CHECKED`); with any other
version, when pydicom was imported before rtqa.io, or with ``RTQA_EAGER_PYDICOM=1`` in the
environment, pydicom is imported as it is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

EAGER_ENV = "RTQA_EAGER_PYDICOM"
DEFERRED = ("pydicom.pixels", "pydicom.pixel_data_handlers", "pydicom.examples")
CHECKED = ("3.0.",)  # pydicom versions whose import-time use of DEFERRED was reviewed

_lock = threading.RLock()
_stubs: dict[str, _Stub] = {}  # name -> stand-in, in creation order
_state = {"installed": False, "real": False}


def _deferred(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in DEFERRED)


class _Stub(types.ModuleType):
    """A stand-in module: attributes are forwarding callables until the real module exists."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        real = sys.modules.get(self.__name__)
        if _state["real"] and real is not None and real is not self:
            return getattr(real, attr)
        return _Forward(self.__name__, attr)


class _Forward:
    """``module.attr`` of a deferred module, imported when first called or inspected."""

    def __init__(self, module: str, attr: str) -> None:
        self._module, self._attr = module, attr
        self.__name__ = attr

    def _target(self) -> Any:
        materialize()
        return getattr(importlib.import_module(self._module), self._attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._target(), attr)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._attr}>"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        stub = _Stub(spec.name)
        _stubs[spec.name] = stub
        return stub

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _deferred(fullname):
            return None
        if _state["importing"]:
            spec = importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
            spec.submodule_search_locations = []
            return spec
        # someone imports a deferred module after pydicom's own import: the real thing, now
        materialize()
        return None


_state["importing"] = False
_FINDER = _Finder()


def install() -> None:
    """Import pydicom with :data:`DEFERRED` stood in for (see the module docstring)."""
    with _lock:
        if _state["installed"] or "pydicom" in sys.modules or os.environ.get(EAGER_ENV) == "1":
            return
        _state["installed"] = True
        try:
            version = importlib.metadata.version("pydicom")
        except importlib.metadata.PackageNotFoundError:
            return
        if not version.startswith(CHECKED):
            return
        sys.meta_path.insert(0, _FINDER)
        _state["importing"] = True
        try:
            import pydicom  # noqa: F401  (the import this hook exists for)
        except BaseException:
            _state["importing"] = False
            materialize()
            raise
        _state["importing"] = False


def deferred_now() -> tuple[str, ...]:
    """The modules stood in for and not yet imported (for tests and benchmarks)."""
    return () if _state["real"] else tuple(_stubs)


def materialize() -> None:
    """Import the real deferred modules (once); every stand-in forwards to them afterwards."""
    with _lock:
        if _state["real"] or not _stubs:
            _remove_finder()
            return
        _state["real"] = True
        _remove_finder()
        for name in _stubs:
            if sys.modules.get(name) is _stubs[name]:
                del sys.modules[name]
        for name in _stubs:
            parent, _, child = name.rpartition(".")
            holder = sys.modules.get(parent)
            if holder is not None and holder.__dict__.get(child) is _stubs[name]:
                delattr(holder, child)
        for name in _stubs:
            importlib.import_module(name)


def _remove_finder() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)

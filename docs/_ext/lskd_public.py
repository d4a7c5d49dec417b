"""Which modules and names of ``logit_standardization`` are public, and whether they are documented.

Shared by the Sphinx extensions (``lskd_api``, ``lskd_coverage``) and by
``tests/test_docs_coverage.py``, so the build and the test apply one rule:

* A public module is any module of the package whose dotted path has no component starting
  with ``_`` (so ``logit_standardization._kd`` and ``..._checks`` are private), except the
  script modules in :data:`SCRIPT_MODULES`, which are programs rather than APIs.
* A module's public names are its ``__all__``; a module without ``__all__`` exports the
  functions and classes it defines whose names do not start with ``_``.
* A public function, class or module needs its own docstring (an inherited one does not
  count). A public constant (data) needs a ``#:`` doc comment where it is assigned, or a
  description in the API reference (an ``.. autodata::`` entry with a body in ``docs/api/``),
  for itself or for another public name of the same object (a re-export).

This file imports no Sphinx and no deep-learning framework by itself; walking the package
imports the public modules (and with them torch / keras where those modules need them).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

PACKAGE = "logit_standardization"

#: Modules that are programs, not APIs: left out of the reference (their pages say how to run them).
SCRIPT_MODULES = {
    f"{PACKAGE}.demo": "the `make demo` program, shown on the Overview page",
}

API_DIR = Path(__file__).resolve().parent.parent / "api"


def is_private(modname: str) -> bool:
    return any(part.startswith("_") for part in modname.split("."))


def import_frameworks_in_safe_order() -> None:
    """Import torch and torchvision before TensorFlow, where they are installed.

    In one process, importing torchvision after TensorFlow (Keras's default backend) crashes
    the interpreter with a segmentation fault (torch 2.14 / torchvision 0.29 / tensorflow-cpu
    2.21); the other order works. Walking the package imports both.
    """
    for name in ("torch", "torchvision"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def public_modules() -> list[str]:
    """Dotted names of every public module of the package, sorted, the package first."""
    import_frameworks_in_safe_order()
    root = importlib.import_module(PACKAGE)
    found = [PACKAGE]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{PACKAGE}.", onerror=_walk_error):
        name = info.name
        if is_private(name) or name in SCRIPT_MODULES:
            continue
        found.append(name)
    return sorted(set(found), key=lambda n: (n != PACKAGE, n))


def _walk_error(name: str) -> None:
    raise ImportError(f"documentation: cannot import {name!r} while listing the public modules")


def public_names(module: ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__``, or the functions/classes it defines."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return [str(n) for n in names]
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == module.__name__:
            out.append(name)
    return out


def kind(obj: object) -> str:
    """``"module"``, ``"class"``, ``"function"`` or ``"data"`` (what autodoc directive documents it)."""
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def own_docstring(obj: object) -> str:
    """The object's own docstring, stripped; an inherited class docstring does not count."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def data_doc_comment(module: ModuleType, name: str) -> str:
    """The ``#:`` doc comment of a module-level constant, searched where it is assigned.

    Looks in ``module`` and in the modules of the package (private ones included) that
    hold the very same object under ``name``.
    """
    from sphinx.pycode import ModuleAnalyzer  # a source parser only; no build

    obj = getattr(module, name)
    candidates = [module.__name__]
    for modname, mod in list(_package_modules().items()):
        if modname != module.__name__ and getattr(mod, name, _MISSING) is obj:
            candidates.append(modname)
    for modname in candidates:
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 - no source available: try the next candidate
            continue
        lines = docs.get(("", name))
        if lines and "".join(lines).strip():
            return "\n".join(lines).strip()
    return ""


_MISSING = object()


def _package_modules() -> dict[str, ModuleType]:
    import sys

    return {n: m for n, m in sys.modules.items() if (n == PACKAGE or n.startswith(PACKAGE + ".")) and m is not None}


# ``.. autodata:: NAME`` then its indented body (reST, inside an {eval-rst} block of a MyST page)
_AUTODATA = re.compile(r"^(?P<indent>[ \t]*)\.\. autodata:: +(?P<name>\S+)[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+.*\n|[ \t]*\n)*)", re.M)


def page_data_descriptions(api_dir: Path = API_DIR) -> dict[str, str]:
    """``.. autodata:: NAME`` entries with their descriptions (option lines dropped) in the API pages."""
    out: dict[str, str] = {}
    for page in sorted(api_dir.rglob("*.md")):
        for m in _AUTODATA.finditer(page.read_text(encoding="utf-8")):
            lines = [line.strip() for line in m.group("body").splitlines()]
            out[m.group("name")] = "\n".join(line for line in lines if line and not line.startswith(":")).strip()
    return out


def _resolve(fullname: str) -> object:
    modname, _, attr = fullname.rpartition(".")
    try:
        return getattr(importlib.import_module(modname), attr, _MISSING)
    except ImportError:
        return _MISSING


def described_alias(module: ModuleType, name: str, page_data: dict[str, str]) -> str:
    """Another public name of the very same constant that the API pages describe ('' if none).

    Only containers count (a tuple, a dict...): small ints and strings are shared by the
    interpreter whatever they mean.
    """
    obj = getattr(module, name)
    if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
        return ""
    full = f"{module.__name__}.{name}"
    for other, body in page_data.items():
        if other != full and body and _resolve(other) is obj:
            return other
    return ""


def undocumented(modname: str, *, page_data: dict[str, str] | None = None) -> list[str]:
    """Problems with the documentation of one public module, as readable sentences (empty: fine)."""
    module = importlib.import_module(modname)
    if page_data is None:
        page_data = page_data_descriptions()
    problems = []
    if not own_docstring(module):
        problems.append(f"module {modname} has no docstring")
    names = public_names(module)
    if len(set(names)) != len(names):
        problems.append(f"{modname}.__all__ lists a name twice")
    for name in names:
        full = f"{modname}.{name}"
        if not hasattr(module, name):
            problems.append(f"{full} is listed in __all__ but does not exist")
            continue
        obj = getattr(module, name)
        k = kind(obj)
        if k == "data":
            if not (data_doc_comment(module, name) or page_data.get(full) or described_alias(module, name, page_data)):
                problems.append(
                    f"{full} (a constant) has no '#:' doc comment where it is assigned"
                    " and no '.. autodata::' description in docs/api/"
                )
        elif not own_docstring(obj):
            problems.append(f"{full} ({k}) has no docstring")
    return problems

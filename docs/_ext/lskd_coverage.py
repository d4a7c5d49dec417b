"""Coverage gate: a public name without documentation fails the build.

When the build finishes, every public module of ``logit_standardization`` (see
``lskd_public``) must be in the API reference, every name of its ``__all__`` must be a
documented object in the built inventory, and each must have its own docstring (constants:
a ``#:`` comment or a description on the API page). Each gap is a warning, hence an error
under ``sphinx -W``. ``tests/test_docs_coverage.py`` checks the docstrings without a build.
"""

from __future__ import annotations

import importlib
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

import lskd_public

logger = logging.getLogger(__name__)


def coverage_problems(app: Sphinx) -> list[str]:
    py = app.env.domains["py"]
    objects, modules = py.objects, py.modules
    page_data = lskd_public.page_data_descriptions()
    problems: list[str] = []
    for modname in lskd_public.public_modules():
        if modname not in modules:
            problems.append(
                f"public module {modname} is not in the API reference "
                f"(add a {{lskd-api}} {modname} block to a page in docs/api/)"
            )
            continue
        module = importlib.import_module(modname)
        for name in lskd_public.public_names(module):
            obj = getattr(module, name, None)
            full = f"{modname}.{name}"
            if lskd_public.kind(obj) == "module":
                if obj.__name__ not in modules:
                    problems.append(f"{full}: module {obj.__name__} is not in the API reference")
            elif full not in objects:
                problems.append(f"{full} is public (in __all__) but not in the API reference")
        problems += lskd_public.undocumented(modname, page_data=page_data)
    return problems


def _check(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    problems = coverage_problems(app)
    for problem in problems:
        logger.warning("documentation coverage: %s", problem, type="lskd", subtype="coverage")
    if not problems:
        logger.info("documentation coverage: every public name is documented")


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("build-finished", _check)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

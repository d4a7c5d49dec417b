"""Serve MathJax from the built site itself, so the math renders without network.

When the PyPI package ``sphinx-mathjax-offline`` (a copy of MathJax 3) is installed, the HTML
build points ``mathjax_path`` at ``_static/mathjax/tex-chtml.js`` and copies the parts of
MathJax that a TeX-to-CommonHTML page uses (the combined component, its fonts, the TeX
extensions it may autoload, the menu and accessibility modules, about 5 MB) into the build.
Without the package the default (a CDN) stays, and the build says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sphinx.util import logging
from sphinx.util.fileutil import copy_asset

logger = logging.getLogger(__name__)

PARTS = ["tex-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y", "adaptors"]


def mathjax_source() -> Path | None:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"
    return src if (src / "tex-chtml.js").is_file() else None


def _config_inited(app: Any, config: Any) -> None:
    if mathjax_source() is not None:
        config.mathjax_path = "mathjax/tex-chtml.js"
    else:
        logger.info("MathJax: sphinx-mathjax-offline is not installed; the pages load MathJax from its CDN")


def _copy(app: Any, exception: Exception | None) -> None:
    src = mathjax_source()
    if exception is not None or src is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        if (src / part).is_dir():
            copy_asset(src / part, dest / part)
        elif (src / part).is_file():
            copy_asset(src / part, dest)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _config_inited)
    app.connect("build-finished", _copy)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

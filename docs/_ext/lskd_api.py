"""``lskd-api``: the API reference of one module, generated from its ``__all__``.

In a MyST page::

    ```{lskd-api} logit_standardization.torch
    :exclude: SOME_CONSTANT
    ```

expands to the module's docstring (``automodule``), a summary table (``autosummary``) of every
public name, and one ``autofunction`` / ``autoclass`` (with its documented members) /
``autodata`` entry per name, in ``__all__`` order. Names in ``:exclude:`` are listed in the
table but documented by hand on the page (constants whose description lives there). A name
that is itself a public module is listed in the table and documented where that module is.

Pages using the directive are re-read on every build, so a changed ``__all__`` never leaves
the reference stale (the coverage gate in ``lskd_coverage`` then checks the result).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective

import lskd_public


class LskdApi(SphinxDirective):
    required_arguments = 1
    has_content = False
    option_spec = {"exclude": directives.unchanged}

    def run(self) -> list[Any]:
        modname = self.arguments[0].strip()
        try:
            module = importlib.import_module(modname)
        except Exception as err:  # noqa: BLE001 - reported as a build warning with the cause
            raise self.error(f"lskd-api: cannot import {modname!r}: {type(err).__name__}: {err}") from err
        excluded = set(self.options.get("exclude", "").replace(",", " ").split())
        names = lskd_public.public_names(module)
        unknown = excluded - set(names)
        if unknown:
            raise self.error(f"lskd-api: :exclude: names not in {modname}'s public names: {sorted(unknown)}")
        if getattr(module, "__file__", None):
            self.env.note_dependency(module.__file__)
        docs = getattr(self.env, "lskd_api_docs", set())
        docs.add(self.env.docname)
        self.env.lskd_api_docs = docs

        page_data = lskd_public.page_data_descriptions()
        lines = [f".. automodule:: {modname}", "   :no-members:", ""]
        if names:
            lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
            lines += [f"   {name}" for name in names]  # relative to the automodule above
            lines.append("")
        for name in names:
            if name in excluded:
                continue
            obj = getattr(module, name, None)
            k = lskd_public.kind(obj)
            full = f"{modname}.{name}"
            if k == "module":
                continue  # documented in its own section
            if k == "class":
                lines += [f".. autoclass:: {full}", "   :members:"]
                if obj.__bases__ != (object,):  # "Bases: object" says nothing
                    lines.append("   :show-inheritance:")
                lines.append("")
            elif k == "function":
                lines += [f".. autofunction:: {full}", ""]
            else:
                lines.append(f".. autodata:: {full}")
                if len(repr(obj)) > 120:  # a long dict or table: its doc says what it holds
                    lines.append("   :no-value:")
                lines.append("")
                alias = "" if lskd_public.data_doc_comment(module, name) else lskd_public.described_alias(module, name, page_data)
                if alias:
                    lines += [f"   The same object as :data:`{alias}`.", ""]
        rst = "\n".join(lines)
        if str(self.env.doc2path(self.env.docname)).endswith(".md"):
            # in a MyST page nested text is parsed as Markdown: hand the reST to eval-rst
            rst = "```{eval-rst}\n" + rst + "\n```\n"
        return self.parse_text_to_nodes(rst)


def _drop_type_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """A constant's docstring is its own ``#:`` comment, never the docstring of its type."""
    if what in {"data", "attribute"} and not callable(obj):
        type_doc = getattr(type(obj), "__doc__", None)
        if isinstance(type_doc, str) and "\n".join(lines).strip() == inspect.cleandoc(type_doc).strip():
            lines.clear()


def _public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show a private base class (``_DistillLoss``) as the public classes it derives from."""
    out: list[type] = []
    todo = list(bases)
    while todo:
        base = todo.pop(0)
        if base.__name__.startswith("_"):
            todo[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in out:
            out.append(base)
    bases[:] = out or [object]


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "lskd_api_docs", set()).discard(docname)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    env.lskd_api_docs = getattr(env, "lskd_api_docs", set()) | getattr(other, "lskd_api_docs", set())


def _always_reread(app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    return sorted(getattr(env, "lskd_api_docs", set()) - removed)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("lskd-api", LskdApi)
    app.connect("autodoc-process-docstring", _drop_type_docstring)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-get-outdated", _always_reread)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

"""Every public name of every public module is documented (no Sphinx build needed).

The rule is the one the docs build enforces (``docs/_ext/lskd_public.py``, used by the
``lskd_coverage`` Sphinx extension): public modules are the package's modules without a
``_``-prefixed path component; their public names are ``__all__``; functions, classes and
modules need their own docstring, constants a ``#:`` comment or a description on the API page.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import lskd_public  # noqa: E402

PUBLIC_MODULES = lskd_public.public_modules()


def test_the_expected_public_modules_are_found():
    for name in ("logit_standardization", "logit_standardization.torch", "logit_standardization.keras"):
        assert name in PUBLIC_MODULES
    assert not [m for m in PUBLIC_MODULES if lskd_public.is_private(m)]
    assert "logit_standardization.demo" not in PUBLIC_MODULES  # a program, not an API


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(modname):
    problems = lskd_public.undocumented(modname)
    assert not problems, "undocumented public names:\n" + "\n".join(problems)


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_public_module_has_an_api_page(modname):
    directive = re.compile(r"^```\{lskd-api\}\s+" + re.escape(modname) + r"\s*$", re.M)
    pages = [p for p in sorted((DOCS / "api").rglob("*.md")) if directive.search(p.read_text(encoding="utf-8"))]
    assert len(pages) == 1, f"{modname} should be in exactly one {{lskd-api}} block under docs/api/, found {pages}"


@pytest.fixture
def fake_module(monkeypatch):
    """A throw-away public module with documented and undocumented names."""
    mod = types.ModuleType("lskd_fake_public", "A module docstring.")

    def documented():
        """Has a docstring."""

    def bare():
        pass

    class Base:
        """Base docstring."""

    class Inherits(Base):
        pass

    mod.documented, mod.bare, mod.Base, mod.Inherits = documented, bare, Base, Inherits
    mod.CONSTANT = (1.0, 2.0)
    mod.__all__ = ["documented", "bare", "Base", "Inherits", "CONSTANT", "missing"]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


def test_the_rule_reports_each_kind_of_gap(fake_module):
    problems = "\n".join(lskd_public.undocumented(fake_module.__name__, page_data={}))
    assert "lskd_fake_public.bare (function) has no docstring" in problems
    assert "lskd_fake_public.Inherits (class) has no docstring" in problems  # an inherited one does not count
    assert "lskd_fake_public.CONSTANT (a constant)" in problems
    assert "lskd_fake_public.missing is listed in __all__ but does not exist" in problems
    assert "documented" not in problems.replace("undocumented", "")
    assert "lskd_fake_public.Base " not in problems


def test_a_page_description_documents_a_constant_and_its_re_exports(fake_module, monkeypatch):
    page = {"lskd_fake_public.CONSTANT": "Two numbers."}
    assert not any("CONSTANT" in p for p in lskd_public.undocumented(fake_module.__name__, page_data=page))
    other = types.ModuleType("lskd_fake_reexport", "Re-exports the constant.")
    other.CONSTANT = fake_module.CONSTANT
    other.__all__ = ["CONSTANT"]
    monkeypatch.setitem(sys.modules, other.__name__, other)
    assert lskd_public.undocumented(other.__name__, page_data=page) == []
    assert lskd_public.undocumented(other.__name__, page_data={}) != []


def test_page_descriptions_are_read_from_autodata_entries(tmp_path):
    (tmp_path / "page.md").write_text(
        "# Page\n\n```{eval-rst}\n.. autodata:: pkg.DESCRIBED\n   :no-value:\n\n   What it holds.\n\n"
        ".. autodata:: pkg.EMPTY\n```\n",
        encoding="utf-8",
    )
    found = lskd_public.page_data_descriptions(tmp_path)
    assert found == {"pkg.DESCRIBED": "What it holds.", "pkg.EMPTY": ""}

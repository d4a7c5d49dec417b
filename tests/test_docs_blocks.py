"""The Python examples of README.md and of the guide pages (docs/*.md) run, and print what the pages say.

What runs: every fenced code block whose info string is exactly ``python`` (```` ```python ````),
in README.md and docs/*.md (not docs/api/, whose pages are generated reference). MyST
directives are not plain fences and are left alone here: the ``{doctest}``/``{testcode}``
blocks belong to Sphinx's doctest builder (``python -m sphinx -b doctest docs <out>``), which
the last test of this module runs (``make docs`` builds HTML only), and a ``{code-block} python``
directive is a shown snippet. Shell (```` ```bash ````), YAML and text
fences are never executed.

Conventions for page authors (the tests below enforce them):

* The blocks of one page run in order, in one fresh namespace, in a subprocess of their own
  (a later block may use what an earlier one defined), with ``OMP_NUM_THREADS=1``, a
  scratch directory as working directory and a timeout per page. torch and torchvision are
  imported before the first block (TensorFlow first and Triton afterwards crash the process;
  see ``docs/_ext/lskd_public.py``).
* A block that cannot run here is marked by an HTML comment on the line right above its fence,
  with the reason (the comment is invisible on the rendered page and on GitHub)::

      <!-- no-run: needs the CIFAR-100 files and a GPU -->
      ```python

  A mark without a reason, or a mark that is not directly above a ``python`` fence, fails.
* A block that must start in a process of its own (for example one that configures
  TensorFlow's devices before TensorFlow initializes) is marked
  ``<!-- own-process: reason -->``: it runs alone in a fresh subprocess and namespace, and
  the page's other blocks do not see its names.
* A ```` ```text ```` fence that follows a python block with only blank lines between them is
  that block's expected standard output. The test compares it with what the block printed:
  line by line, trailing spaces and leading/trailing blank lines ignored, and ``...`` matching
  any text (as doctest's ELLIPSIS) for the parts that change from run to run (timings,
  paths). So numbers quoted that way are the numbers of an actual run.
* A ``python`` fence with anything else in its info string (```` ```python no-run ````) fails
  the test, so that a misspelt mark cannot silently turn a block off.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_TIMEOUT_S = float(os.environ.get("LSKD_DOCS_BLOCK_TIMEOUT", "420"))

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"^\s*<!--\s*(?P<kind>no-run|own-process)\b\s*:?\s*(?P<reason>.*?)\s*-->\s*$")
_ANY_MARK = re.compile(r"<!--\s*(no[-_ ]?run|own[-_ ]?process)", re.I)


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    mark: str | None = None  # None, "no-run" or "own-process"
    reason: str = ""
    expected: str | None = None  # the ```text block that follows, if any
    expected_line: int = 0


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def parse_page(path: Path) -> Page:
    """The page's python blocks, their marks and expected outputs, and any misuse of the conventions."""
    page = Page(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    fences = []  # (start index, end index, info, body)
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, indent = m["ticks"], len(m["indent"])
        close = re.compile(r"^ {0,3}" + re.escape(ticks[0]) + "{" + str(len(ticks)) + r",}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[i + 1 : j]]
        fences.append((i, j, m["info"].strip(), "\n".join(body) + "\n"))
        i = j + 1

    used_marks = set()
    for k, (start, end, info, body) in enumerate(fences):
        words = info.split()
        if not words or words[0] != "python":
            continue
        if len(words) > 1:
            page.problems.append(
                f"{page.name}:{start + 1}: fence info {info!r}: a python block is either ```python (run) "
                "or marked by a '<!-- no-run: reason -->' comment on the line above"
            )
            continue
        block = Block(page.name, start + 1, body)
        if start > 0:
            mark = _MARK.match(lines[start - 1])
            if mark:
                used_marks.add(start - 1)
                block.mark, block.reason = mark["kind"], mark["reason"]
                if not re.search(r"\w", block.reason):
                    page.problems.append(f"{page.name}:{start}: '{block.mark}' mark without a reason")
        if k + 1 < len(fences):
            nstart, nend, ninfo, nbody = fences[k + 1]
            if ninfo == "text" and all(not line.strip() for line in lines[end + 1 : nstart]):
                block.expected, block.expected_line = nbody, nstart + 1
        page.blocks.append(block)

    for n, line in enumerate(lines):
        if _ANY_MARK.search(line) and n not in used_marks:
            page.problems.append(
                f"{page.name}:{n + 1}: {line.strip()!r} is not a '<!-- no-run: reason -->' or "
                "'<!-- own-process: reason -->' comment directly above a ```python fence"
            )
    return page


PARSED = {p.relative_to(ROOT).as_posix(): parse_page(p) for p in PAGES}
RUN_PAGES = [name for name, page in PARSED.items() if any(b.mark != "no-run" for b in page.blocks)]


# The program that runs one page's blocks in a subprocess. It reads the blocks (JSON) from
# argv[1] and writes, block by block, {"line", "stdout", "error"} to argv[2]; it stops at the
# first error, since later blocks build on earlier ones.
RUNNER = r'''
import contextlib, io, json, sys, traceback
for name in ("torch", "torchvision"):      # before TensorFlow, see docs/_ext/lskd_public.py
    try:
        __import__(name)
    except ImportError:
        pass
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
results = []
namespace = {"__name__": "__main__"}
for block in blocks:
    out = io.StringIO()
    error = None
    try:
        code = compile("\n" * block["line"] + block["code"], block["page"], "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    except BaseException:
        error = traceback.format_exc()
    results.append({"line": block["line"], "stdout": out.getvalue(), "error": error})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)
    if error:
        break
'''


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        MPLBACKEND="Agg",
        PYTHONHASHSEED="0",
        CUDA_VISIBLE_DEVICES="",
    )
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def run_blocks(blocks: list[Block], workdir: Path, timeout: float) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    script, spec, result = workdir / "_run_blocks.py", workdir / "_blocks.json", workdir / "_results.json"
    script.write_text(RUNNER, encoding="utf-8")
    spec.write_text(json.dumps([{"page": b.page, "line": b.line, "code": b.code} for b in blocks]), encoding="utf-8")
    try:
        proc = subprocess.run(
            [sys.executable, str(script), str(spec), str(result)],
            cwd=workdir,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        done = json.loads(result.read_text(encoding="utf-8")) if result.exists() else []
        pytest.fail(
            f"{blocks[0].page}: the blocks did not finish within {timeout:.0f} s "
            f"(finished: {[r['line'] for r in done]})"
        )
    results = json.loads(result.read_text(encoding="utf-8")) if result.exists() else []
    if proc.returncode != 0 and not any(r["error"] for r in results):
        ran = {r["line"] for r in results}
        pending = next((b.line for b in blocks if b.line not in ran), None)
        pytest.fail(
            f"{blocks[0].page}: the process died (exit status {proc.returncode}) in the block at line "
            f"{pending}\n{proc.stderr[-4000:]}"
        )
    return results


def output_matches(expected: str, actual: str) -> bool:
    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n") + "\n"

    return doctest.OutputChecker().check_output(norm(expected), norm(actual), doctest.ELLIPSIS)


def check_results(blocks: list[Block], results: list[dict]) -> None:
    by_line = {r["line"]: r for r in results}
    for block in blocks:
        result = by_line.get(block.line)
        assert result is not None, f"{block.page}:{block.line}: the block did not run"
        if result["error"]:
            pytest.fail(f"{block.page}:{block.line}: the block failed\n{result['error']}")
        if block.expected is not None and not output_matches(block.expected, result["stdout"]):
            pytest.fail(
                f"{block.page}:{block.line}: printed output differs from the ```text block at line "
                f"{block.expected_line}\n--- page\n{block.expected}--- actual\n{result['stdout']}"
            )


# -- the conventions ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PARSED))
def test_page_marks_follow_the_conventions(name):
    problems = PARSED[name].problems
    assert not problems, "\n".join(problems)


def test_the_pages_have_runnable_python_blocks():
    assert PARSED["README.md"].blocks, "README.md has no ```python block"
    assert RUN_PAGES, "no page has a python block to run"


def test_parser_reads_marks_reasons_and_outputs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            Text.

            ```python
            x = 1
            print(x + 1)
            ```

            ```text
            2
            ```

            <!-- no-run: needs a GPU -->
            ```python
            import cuda_only
            ```

            <!-- no-run -->
            ```python
            pass
            ```

            ```python no-run
            pass
            ```

            ```{doctest}
            >>> 1
            1
            ```

            <!-- no-run: dangling -->
            Prose.

              ```python
              y = 2
              ```
            """
        ),
        encoding="utf-8",
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        parsed = parse_page(page)
    finally:
        ROOT = saved
    blocks = parsed.blocks
    assert [(b.line, b.mark) for b in blocks] == [(3, None), (13, "no-run"), (18, "no-run"), (34, None)]
    assert blocks[0].code == "x = 1\nprint(x + 1)\n" and blocks[0].expected == "2\n"
    assert blocks[1].reason == "needs a GPU" and blocks[1].expected is None
    assert blocks[3].code == "y = 2\n"
    problems = "\n".join(parsed.problems)
    assert "page.md:17: 'no-run' mark without a reason" in problems
    assert "fence info 'python no-run'" in problems
    assert "page.md:31:" in problems  # the dangling mark
    assert len(parsed.problems) == 3


def test_output_comparison():
    assert output_matches("a 1\nb 2\n", "a 1   \nb 2\n\n")
    assert output_matches("took ... ms\n", "took 12.5 ms\n")
    assert not output_matches("0.1234\n", "0.1235\n")


# -- running the pages ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_PAGES)
def test_page_blocks_run_and_print_what_the_page_shows(name, tmp_path):
    page = PARSED[name]
    assert not page.problems, "\n".join(page.problems)
    shared = [b for b in page.blocks if b.mark is None]
    alone = [b for b in page.blocks if b.mark == "own-process"]
    if shared:
        check_results(shared, run_blocks(shared, tmp_path / "page", PAGE_TIMEOUT_S))
    for block in alone:
        check_results([block], run_blocks([block], tmp_path / f"line{block.line}", PAGE_TIMEOUT_S))


@pytest.mark.slow
def test_sphinx_doctest_blocks_pass(tmp_path):
    """The pages' ``{doctest}``/``{testcode}`` blocks, run by Sphinx's own doctest builder."""
    env = _environment()
    env["LSKD_DOCS_INTERSPHINX"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "doctest", "-q", str(ROOT / "docs"), str(tmp_path / "doctest")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    report = tmp_path / "doctest" / "output.txt"
    summary = report.read_text(encoding="utf-8") if report.exists() else ""
    assert proc.returncode == 0, f"sphinx -b doctest failed ({proc.returncode})\n{summary[-4000:]}\n{proc.stderr[-4000:]}"
    ran = re.search(r"^\s*(\d+) tests\s*$", summary, re.M)
    assert ran and int(ran.group(1)) > 0, summary[-2000:]
    assert re.search(r"^\s*0 failures in tests\s*$", summary, re.M), summary[-2000:]

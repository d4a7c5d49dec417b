"""Check the built documentation in a real browser (headless Chromium).

Usage::

    python docs/check_site.py docs/_build/html [--out DIR] [--chromium PATH] [--skip-doctest]

1. Runs the examples of the pages (``sphinx -b doctest``: the ``{doctest}`` and
   ``{testcode}`` blocks of the Overview and the other pages), unless ``--skip-doctest``.
2. Serves HTML_DIR on a localhost port and, for the Overview and the API pages, lets headless
   Chromium (Debian package ``chromium``) dump the rendered DOM and take a 1280x2000
   screenshot. It asserts that the page title and the main headings are there, that the
   browser fetched the furo stylesheet (and that the file is in the build), and that the
   screenshot is a styled page rather than a blank or unstyled one (the sidebar is painted in
   furo's colour, the content has ink), and that MathJax typeset the formulas of the Overview
   and the Theory page (when the build serves MathJax itself, see ``_ext/lskd_mathjax.py``).

Screenshots and DOM dumps go to ``--out`` (default: ``HTML_DIR/../screenshots``). Exits 1
with one line per failed check, 0 when everything passes.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,2000",
    "--virtual-time-budget=5000",
]


@dataclass
class Page:
    """A page to render and what must be on it."""

    path: str
    title: str  # text the <title> must contain
    h1: str  # text the first-level heading must contain
    headings: list[str] = field(default_factory=list)  # texts of h2 headings that must be there
    ids: list[str] = field(default_factory=list)  # element ids that must exist (API entries)
    math: bool = False  # the page has math that MathJax must have typeset


PAGES = [
    Page(
        "index.html",
        title="logit-standardization",
        h1="logit-standardization",
        headings=[
            "The problem: a student forced to copy the teacher",
            "The fix: a Z-score before the softmax",
            "Ten lines per framework",
        ],
        math=True,
    ),
    Page(
        "theory.html",
        title="Theory",
        h1="Theory",
        headings=["The weighted Z-score", "Four properties", "Paper and published code"],
        math=True,
    ),
    Page(
        "api/core.html",
        title="NumPy core",
        h1="NumPy core",
        ids=[
            "module-logit_standardization",
            "logit_standardization.zscore",
            "logit_standardization.kd_loss",
            "logit_standardization.DEFAULT_TEMPERATURES",
        ],
    ),
    Page(
        "api/torch.html",
        title="PyTorch backend",
        h1="PyTorch backend",
        ids=["module-logit_standardization.torch", "logit_standardization.torch.KDLoss"],
    ),
]


class _Outline(HTMLParser):
    """Collects <title>, h1/h2 texts, element ids and stylesheet links of a DOM dump."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.headings: dict[str, list[str]] = {"h1": [], "h2": []}
        self.ids: set[str] = set()
        self.stylesheets: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "link" and (a.get("rel") or "") == "stylesheet" and a.get("href"):
            self.stylesheets.append(a["href"] or "")
        if tag in ("title", "h1", "h2"):
            self._stack.append(tag)
            if tag != "title":
                self.headings[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._stack:
            return
        tag = self._stack[-1]
        if tag == "title":
            self.title += data
        else:
            self.headings[tag][-1] += data


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("¶", "").replace("#", "")).strip()


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[tuple[str, int]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _Handler.requested.append((self.path.split("?", 1)[0], int(code) if str(code).isdigit() else 0))


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def chromium(binary: str, url: str, extra: list[str], profile: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def load_png(path: Path) -> np.ndarray:
    """RGB array in [0, 255] (Pillow when installed, else matplotlib's reader)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float64)
    except ImportError:
        import matplotlib.image

        rgb = matplotlib.image.imread(str(path))[..., :3]
        return rgb.astype(np.float64) * (255.0 if rgb.max() <= 1.0 else 1.0)


def check_screenshot(path: Path) -> list[str]:
    """A styled, non-blank page: ink in the content, furo's sidebar colour at the left."""
    img = load_png(path)
    problems = []
    h, w, _ = img.shape
    if (w, h) != (1280, 2000):
        problems.append(f"{path.name}: screenshot is {w}x{h}, expected 1280x2000")
    gray = img.mean(axis=2)
    if gray.std() < 8.0:
        problems.append(f"{path.name}: screenshot looks blank (pixel std {gray.std():.1f})")
    dark = float((gray < 128).mean())
    if dark < 0.002:
        problems.append(f"{path.name}: almost no text on the page ({dark:.4%} dark pixels)")
    colours = len(np.unique(img[::4, ::4].astype(np.uint8).reshape(-1, 3), axis=0))
    if colours < 20:
        problems.append(f"{path.name}: only {colours} colours; the stylesheet does not seem applied")
    # furo paints the navigation sidebar in a tint that is not the page white (#f8f9fb light)
    strip = img[600:1900, 5:40].reshape(-1, 3)
    sidebar_tint = np.median(strip, axis=0)
    if np.all(sidebar_tint >= 254.5):
        problems.append(f"{path.name}: no sidebar background at the left edge; furo's layout is not applied")
    return problems


def check_page(page: Page, dom: str, html_dir: Path, requested: list[tuple[str, int]]) -> list[str]:
    outline = _Outline()
    outline.feed(dom)
    problems = []
    title = _clean(outline.title)
    if page.title not in title:
        problems.append(f"{page.path}: <title> is {title!r}, expected it to contain {page.title!r}")
    h1s = [_clean(h) for h in outline.headings["h1"]]
    if not any(page.h1 in h for h in h1s):
        problems.append(f"{page.path}: no <h1> containing {page.h1!r} (found {h1s})")
    h2s = [_clean(h) for h in outline.headings["h2"]]
    for want in page.headings:
        if not any(h.startswith(want) for h in h2s):
            problems.append(f"{page.path}: no <h2> starting with {want!r} (found {h2s})")
    for want in page.ids:
        if want not in outline.ids:
            problems.append(f"{page.path}: no element with id {want!r} (an API entry)")
    if page.math:
        if (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file():
            typeset = dom.count("<mjx-container")
            if typeset == 0:
                problems.append(f"{page.path}: MathJax typeset no formula (no <mjx-container> in the DOM)")
        else:
            print(f"note: {page.path}: the site loads MathJax from a CDN, math not checked offline")
    furo = [href for href in outline.stylesheets if "styles/furo.css" in href]
    if not furo:
        problems.append(f"{page.path}: the DOM links no furo stylesheet (links: {outline.stylesheets})")
    else:
        css_rel = furo[0].split("?", 1)[0]
        css_file = (html_dir / page.path).parent / css_rel
        if not css_file.is_file() or css_file.stat().st_size < 1000:
            problems.append(f"{page.path}: stylesheet {css_rel} is missing from the build ({css_file})")
        served = [code for path, code in requested if path.endswith("/_static/styles/furo.css")]
        if 200 not in served:
            problems.append(f"{page.path}: the browser did not load _static/styles/furo.css (HTTP status {served or 'never requested'})")
    return problems


def run_doctest(build: Path, doctrees: Path) -> list[str]:
    """Run the pages' examples with Sphinx's doctest builder (outputs are for the TensorFlow Keras backend).

    Reuses the HTML build's doctrees, so only what changed since is read again. A failed
    example makes the builder exit non-zero; warnings are the HTML build's business (-W there).
    """
    cmd = [sys.executable, "-m", "sphinx", "-b", "doctest", "-q", "-d", str(doctrees), str(DOCS), str(build)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    report = build / "output.txt"
    summary = report.read_text(encoding="utf-8").strip().splitlines()[-4:] if report.is_file() else []
    print("doctest:", " / ".join(line.strip() for line in summary if line.strip()) or "(no report)")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        return [f"sphinx -b doctest failed (exit {proc.returncode}):\n{tail}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("html_dir", type=Path, help="the built site (docs/_build/html)")
    parser.add_argument("--out", type=Path, default=None, help="where screenshots and DOM dumps go")
    parser.add_argument("--chromium", default=None, help="the browser binary (default: chromium on PATH)")
    parser.add_argument("--skip-doctest", action="store_true", help="do not run the pages' examples")
    args = parser.parse_args(argv)

    html_dir = args.html_dir.resolve()
    out = (args.out or html_dir.parent / "screenshots").resolve()
    problems: list[str] = []
    if not (html_dir / "index.html").is_file():
        print(f"check_site: {html_dir}/index.html not found; build the site first (make docs)", file=sys.stderr)
        return 1
    binary = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        print("check_site: no chromium on PATH; install the Debian package: apt-get install -y chromium", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)

    if not args.skip_doctest:
        problems += run_doctest(html_dir.parent / "doctest", html_dir / ".doctrees")

    server, base = serve(html_dir)
    try:
        for page in PAGES:
            if not (html_dir / page.path).is_file():
                problems.append(f"{page.path}: not in the build")
                continue
            stem = page.path.replace("/", "_").removesuffix(".html")
            with tempfile.TemporaryDirectory(prefix="lskd-chromium-") as profile:
                _Handler.requested.clear()
                dom_run = chromium(binary, base + page.path, ["--dump-dom"], Path(profile) / "dom")
                requested = list(_Handler.requested)
                shot = out / f"{stem}.png"
                shot.unlink(missing_ok=True)
                shot_run = chromium(binary, base + page.path, [f"--screenshot={shot}"], Path(profile) / "shot")
            (out / f"{stem}.dom.html").write_text(dom_run.stdout, encoding="utf-8")
            if dom_run.returncode != 0 or "<html" not in dom_run.stdout:
                problems.append(f"{page.path}: chromium --dump-dom failed (exit {dom_run.returncode}): {dom_run.stderr.strip()[-500:]}")
                continue
            problems += check_page(page, dom_run.stdout, html_dir, requested)
            if shot_run.returncode != 0 or not shot.is_file():
                problems.append(f"{page.path}: chromium --screenshot failed (exit {shot_run.returncode}): {shot_run.stderr.strip()[-500:]}")
            else:
                problems += check_screenshot(shot)
            print(f"checked {page.path}: screenshot {shot}")
    finally:
        server.shutdown()

    if problems:
        print(f"check_site: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"check_site: {len(PAGES)} pages rendered in Chromium, all checks passed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

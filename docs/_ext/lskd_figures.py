"""Figures of the documentation, drawn with the library's own code at build time.

As a Sphinx extension it draws every figure into ``lskd_figures_dir`` (relative to the docs
folder) when the builder starts; a file is rewritten only when its bytes change, so an
unchanged figure is not copied again. Run it alone to look at the figures::

    python docs/_ext/lskd_figures.py OUTDIR

Figures (all NumPy + matplotlib, seeded, so every build draws the same pixels):

* ``overview.png`` -- a teacher and a student that rank the classes alike at another scale
  and offset, and the KD loss as the student's scale varies, raw and standardized.
* ``properties.png`` -- the four properties of the Z-score: zero mean, finite deviation,
  monotonicity, boundedness, each against its closed form.
* ``logit_stats.png`` -- per-sample mean and deviation of random teacher and student logits
  before and after standardization.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from logit_standardization import kd_loss, zscore

TEACHER_COLOR = "#1f77b4"
STUDENT_COLOR = "#d62728"
THEORY_COLOR = "#222222"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
            "svg.hashsalt": "lskd",
        }
    )
    return plt


def overview(plt: Any) -> Any:
    rng = np.random.default_rng(3)
    c = 10
    teacher = np.sort(rng.normal(size=c))[::-1] * 4.0 + 1.0
    student = 0.3 * teacher - 2.0  # same ranking, smaller scale, other offset
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.1, 1.1, 1.2]})
    k = np.arange(c)
    w = 0.38
    ax0.bar(k - w / 2, teacher, w, color=TEACHER_COLOR, label="teacher")
    ax0.bar(k + w / 2, student, w, color=STUDENT_COLOR, label="student")
    ax0.set(title="raw logits", xlabel="class", ylabel="logit", xticks=k)
    ax0.legend(loc="upper right")
    zt, zs = zscore(teacher[None])[0], zscore(student[None])[0]
    ax1.bar(k - w / 2, zt, w, color=TEACHER_COLOR, label=r"$\mathcal{Z}$(teacher)")
    ax1.bar(k + w / 2, zs, w, color=STUDENT_COLOR, label=r"$\mathcal{Z}$(student)")
    ax1.set(title="after the Z-score", xlabel="class", ylabel="standardized logit", xticks=k)
    ax1.legend(loc="upper right")

    # KD loss of a student a*t + b against teacher t, raw and standardized, batch of 64
    t = rng.normal(size=(64, 100)) * 5.0
    scales = np.geomspace(0.05, 4.0, 60)
    raw = [kd_loss(a * t - 2.0, t, temperature=2.0, standardize=False) for a in scales]
    ls = [kd_loss(a * t - 2.0, t, temperature=2.0) for a in scales]
    ax2.plot(scales, raw, color=THEORY_COLOR, label="KD, raw logits")
    ax2.plot(scales, ls, color=STUDENT_COLOR, lw=2.2, label="KD + logit standardization")
    ax2.axvline(1.0, color="0.6", ls=":", lw=1)
    ax2.set(
        xscale="log",
        title=r"KD loss ($\tau=2$) of the student $a\,t - 2$",
        xlabel="student's logit scale $a$ (teacher: $a = 1$)",
        ylabel=r"$\tau^2\,\mathrm{KL}$",
    )
    ax2.legend(loc="upper center")
    fig.tight_layout()
    return fig


def properties(plt: Any) -> Any:
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    (ax_mean, ax_std), (ax_mono, ax_bound) = axes

    # (a) zero mean: rows with random scale and offset
    n, c = 400, 100
    scale = np.exp(rng.uniform(np.log(0.1), np.log(100.0), size=(n, 1)))
    offset = rng.uniform(-50.0, 50.0, size=(n, 1))
    x = rng.normal(size=(n, c)) * scale + offset
    z = zscore(x)
    ax_mean.scatter(x.mean(axis=1), z.mean(axis=1), s=8, color=TEACHER_COLOR, label=r"mean of $\mathcal{Z}(x)$")
    ax_mean.set(
        title=f"zero mean: max |mean Z| = {np.abs(z.mean(axis=1)).max():.1e}",
        xlabel=r"mean of the raw row $\bar x$",
        ylabel=r"mean of $\mathcal{Z}(x)$",
        ylim=(-1, 1),
    )
    ax_mean.legend(loc="upper left")

    # (b) finite deviation: population std of Z against the class count
    cs = np.unique(np.geomspace(2, 1000, 25).astype(int))
    for ddof, marker, label in ((1, "o", "ddof=1 (code)"), (0, "s", "ddof=0 (paper)")):
        for tau, color in ((1.0, TEACHER_COLOR), (2.0, STUDENT_COLOR)):
            measured = [zscore(rng.standard_cauchy(size=(8, ci)) * 10, temperature=tau, ddof=ddof, eps=0.0).std(axis=1).max() for ci in cs]
            ax_std.scatter(cs, measured, s=16, marker=marker, facecolors="none" if ddof else color, edgecolors=color,
                           label=f"{label}, $\\tau$={tau:g}")
        for tau in (1.0, 2.0):
            ax_std.plot(cs, np.sqrt((cs - ddof) / cs) / tau, color=THEORY_COLOR, lw=0.8)
    ax_std.set(
        xscale="log",
        title=r"finite deviation: $\sqrt{(C-1)/C}\,/\,\tau$ (ddof=1), $1/\tau$ (ddof=0)",
        xlabel="classes $C$",
        ylabel=r"population std of $\mathcal{Z}(x;\tau)$",
        ylim=(0.3, 1.1),
    )
    ax_std.legend(loc="lower right", fontsize=8, ncol=2)

    # (c) monotonicity: Z_k against x_k for one row at several temperatures
    row = np.sort(rng.normal(size=20) * 3.0 + rng.standard_cauchy(size=20))
    for tau, color in ((1.0, TEACHER_COLOR), (2.0, STUDENT_COLOR), (4.0, "#2ca02c")):
        ax_mono.plot(row, zscore(row[None], temperature=tau)[0], "o-", ms=3.5, color=color, label=f"$\\tau$={tau:g}")
    ax_mono.set(
        title="monotonicity: order kept (an increasing affine map)",
        xlabel="raw logit $x_k$",
        ylabel=r"$\mathcal{Z}(x;\tau)_k$",
    )
    ax_mono.legend(loc="upper left")

    # (d) boundedness: largest |Z| against the class count; the one-spike row attains the bound
    cs = np.unique(np.geomspace(2, 2000, 30).astype(int))
    spike = [np.abs(zscore(np.eye(1, ci) * 1e3)).max() for ci in cs]
    gauss = [np.abs(zscore(rng.normal(size=(64, ci)))).max() for ci in cs]
    cauchy = [np.abs(zscore(rng.standard_cauchy(size=(64, ci)))).max() for ci in cs]
    ax_bound.plot(cs, (cs - 1) / np.sqrt(cs), color=THEORY_COLOR, lw=1.2, label=r"bound $(C-1)/\sqrt{C}$")
    ax_bound.scatter(cs, spike, s=18, color=STUDENT_COLOR, label="one-spike row")
    ax_bound.scatter(cs, cauchy, s=12, marker="^", color="#2ca02c", label="Cauchy rows (max of 64)")
    ax_bound.scatter(cs, gauss, s=12, marker="s", color=TEACHER_COLOR, label="Gaussian rows (max of 64)")
    ax_bound.set(
        xscale="log",
        yscale="log",
        title=r"boundedness: $|\mathcal{Z}_k| \leq (C-1)/(\sqrt{C}\,\tau)$, $\tau=1$",
        xlabel="classes $C$",
        ylabel=r"$\max_k |\mathcal{Z}(x)_k|$",
    )
    ax_bound.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def logit_stats(plt: Any) -> Any:
    rng = np.random.default_rng(1)
    b, c = 256, 100
    base = rng.normal(size=(b, c))
    teacher = base * rng.uniform(2.0, 8.0, size=(b, 1)) + rng.normal(0.0, 3.0, size=(b, 1))
    student = (0.6 * base + 0.8 * rng.normal(size=(b, c))) * rng.uniform(0.5, 2.0, size=(b, 1)) + rng.normal(0.0, 1.0, size=(b, 1))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for x, color, name in ((teacher, TEACHER_COLOR, "teacher"), (student, STUDENT_COLOR, "student")):
        ax0.scatter(x.mean(axis=1), x.std(axis=1), s=9, alpha=0.7, color=color, label=name)
        z = zscore(x)
        ax1.scatter(z.mean(axis=1), z.std(axis=1), s=30, alpha=0.5, color=color, label=f"$\\mathcal{{Z}}$({name})")
    ax0.set(title=f"raw logits ({b} samples, {c} classes)", xlabel="per-sample mean", ylabel="per-sample std")
    ax0.set_yscale("log")
    ax0.legend(loc="upper right", frameon=True, framealpha=0.9)
    target = np.sqrt((c - 1) / c)
    ax1.axhline(target, color=THEORY_COLOR, lw=0.8, ls="--")
    ax1.annotate(rf"$\sqrt{{(C-1)/C}} = {target:.4f}$", (0.0, target), xytext=(0.25, 0.9), textcoords="axes fraction",
                 arrowprops={"arrowstyle": "->", "color": "0.3"})
    ax1.set(
        title="standardized: every sample at one point",
        xlabel="per-sample mean",
        ylabel="per-sample std (population)",
        xlim=(-1.0, 1.0),
        ylim=(0.0, 1.5),
    )
    ax1.legend(loc="lower right")
    fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[Any], Any]] = {
    "overview.png": overview,
    "properties.png": properties,
    "logit_stats.png": logit_stats,
}


def draw_all(outdir: Path) -> list[Path]:
    """Draw every figure into ``outdir``; return the files that changed."""
    plt = _plt()
    outdir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, draw in FIGURES.items():
        fig = draw(plt)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=130, facecolor="white", metadata={"Software": None})
        plt.close(fig)
        data = buf.getvalue()
        path = outdir / name
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            changed.append(path)
    return changed


def _builder_inited(app: Any) -> None:
    from sphinx.util import logging

    outdir = Path(app.confdir) / app.config.lskd_figures_dir
    changed = draw_all(outdir)
    logging.getLogger(__name__).info(f"lskd figures: {len(FIGURES)} drawn into {outdir}, {len(changed)} changed")


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("lskd_figures_dir", "_build/figures", "env", types=frozenset({str}))
    app.connect("builder-inited", _builder_inited)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/_ext/lskd_figures.py OUTDIR")
    for p in draw_all(Path(sys.argv[1])):
        print(p)

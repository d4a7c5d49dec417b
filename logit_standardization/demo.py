"""A short NumPy demonstration of logit standardization and the four losses.

Run with ``python -m logit_standardization.demo`` (``make demo``).
"""

from __future__ import annotations

import numpy as np

from . import ctkd_lambda, ctkd_temperature, dkd_loss, kd_loss, mlkd_terms, zscore


def main() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(4, 10)) * 6.0 + 2.0
    # a student that already ranks the classes like the teacher, at another scale and offset
    student = 0.25 * teacher - 1.0
    labels = teacher.argmax(axis=1)
    print("Logit standardization (Sun et al., CVPR 2024): Z(x) = (x - mean) / (eps + std) / tau\n")
    print(f"teacher logits: mean {teacher.mean():+.2f}, std {teacher.std(axis=1).mean():.2f}")
    print(f"student logits: mean {student.mean():+.2f}, std {student.std(axis=1).mean():.2f}")
    zt, zs = zscore(teacher), zscore(student)
    print(f"after zscore:   max |Z(teacher) - Z(student)| = {np.abs(zt - zs).max():.2e}\n")
    print(f"{'loss':<8}{'raw logits':>14}{'standardized':>16}")
    for name, fn in [
        ("KD", lambda s, t, ls: kd_loss(s, t, standardize=ls)),
        ("DKD", lambda s, t, ls: dkd_loss(s, t, labels, standardize=ls)),
        ("MLKD", lambda s, t, ls: sum(mlkd_terms(s, s, t, t, standardize=ls).values())),
    ]:
        print(f"{name:<8}{fn(student, teacher, False):>14.4f}{fn(student, teacher, True):>16.4f}")
    print(
        "\nThe student matches the teacher's logits up to scale and offset: without"
        "\nstandardization the KD loss still pushes it to copy the teacher's scale;"
        "\nwith it, only the remaining mismatch is penalised (MLKD keeps its un-"
        "\nstandardized class/batch-correlation terms)."
    )
    print(f"\nCTKD: temperature at init g=1: {ctkd_temperature(1.0):.3f};"
          f" lambda(epoch 1, 5, 10): {ctkd_lambda(1):.4f}, {ctkd_lambda(5):.4f}, {ctkd_lambda(10):.4f}")


if __name__ == "__main__":
    main()

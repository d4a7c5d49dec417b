"""``python -m logit_standardization.training`` (and ``torchrun -m logit_standardization.training``): ``lskd-train``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

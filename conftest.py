"""Root pytest configuration (applies to the tests and to the doctests of the package).

TensorFlow and PyTorch share this test environment. Importing torchvision (which loads
Triton) after TensorFlow crashes the interpreter, so both are imported first here, before
any test module can import TensorFlow.
"""

try:  # pragma: no cover - depends on the installed torch build
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

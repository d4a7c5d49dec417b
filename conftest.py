"""Root pytest configuration (applies to the tests and to the doctests of the package).

TensorFlow and PyTorch share this test environment. Importing Triton (pulled in by
torchvision and torch.compile) after TensorFlow crashes the interpreter, so it is
imported first here, before any test module can import TensorFlow.
"""

try:  # pragma: no cover - depends on the installed torch build
    import triton  # noqa: F401
except ImportError:
    pass

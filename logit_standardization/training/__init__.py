"""Training tools for logit-standardized knowledge distillation (PyTorch).

Submodules: ``models`` (the model zoo), ``data`` (datasets and transforms), and the
``lskd-train`` command-line interface. Nothing heavy is imported here.
"""

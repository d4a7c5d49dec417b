import os

import pytest
from hypothesis import HealthCheck, settings

# CI runs at least 200 examples per property; locally the same unless overridden.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))



@pytest.fixture(scope="module")
def one_torch_thread():
    """One PyTorch intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``):
    small tensors gain nothing from intra-op threads, and on a shared CPU every parallel region waits
    for a descheduled worker (milliseconds per op)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

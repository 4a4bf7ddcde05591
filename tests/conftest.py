import pytest
import torch

# One thread: the suite's tensors are small, and on a 2-core machine OpenMP's threads contend (a phase-I
# equivariance case takes 3-4 s with the default threads, 0.65 s with one). Training runs set their own.
torch.set_num_threads(1)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def dtype(request) -> torch.dtype:
    """Every numerical test runs in float32 and float64 (tolerances from geo_pe.testing)."""
    return request.param

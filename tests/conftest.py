import pytest
import torch


@pytest.fixture(params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def dtype(request) -> torch.dtype:
    """Every numerical test runs in float32 and float64 (tolerances from geo_pe.testing)."""
    return request.param

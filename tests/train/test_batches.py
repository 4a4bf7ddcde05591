"""The random draws of a training step: a pure function of (seed, step, stream, rank), never shared."""

from __future__ import annotations

import itertools

import pytest
import torch

from train.batches import STREAMS, step_generator


def _draws(generator: torch.Generator) -> tuple[int, ...]:
    return tuple(torch.randint(0, 2**62, (4,), generator=generator).tolist())


def test_step_draws_are_reproducible_and_never_shared():
    """The same arguments give the same draws; every (seed, step, stream, rank) of a grid gets its own.
    The affine seed (seed * P + step) * 7 + stream used before shared them: rank 2's orientation stream
    (2 * 2 + 3 = 7) at step s was rank 0's task stream at step s + 1."""
    assert _draws(step_generator(3, 17, "orientation", 2)) == _draws(step_generator(3, 17, "orientation", 2))
    grid = list(itertools.product(range(3), range(40), STREAMS, range(8)))
    draws = {_draws(step_generator(*key)) for key in grid}
    assert len(draws) == len(grid)


def test_an_unknown_stream_is_named():
    with pytest.raises(ValueError, match=r"stream: expected one of \('task', 'transform'"):
        step_generator(0, 0, "augment")

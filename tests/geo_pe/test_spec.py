import json

import pytest
import torch

from geo_pe.reps import DirectSum, IrrepsSpec, SO3Rep, TensorProduct, TranslationRep

SPECS = {
    "t1:32": 64,
    "t2:16(base=100,layout=mixed)": 32,
    "t3:6(base=50,seed=3,learnable)": 12,
    "so2:2x0+4x1+2x3": 14,
    "so3:1x0+2x1+1x2": 12,
    "t1:8+so3:2x1": 22,
    "t1:4*so3:1x1": 24,
    "t1:4*so3:(1x1+1x2)": 64,
    "so3@rot:1x1+so3@dir:1x2+t1@chain:2": 12,
    "so2:1x0*t2:2+so3:3x1": 13,
    "s2:2x1+1x2": 11,
    "t1:4*s2@view:1x1+so3:1x1": 27,
}


@pytest.mark.parametrize("text", list(SPECS))
def test_round_trips_and_dimension(text):
    spec = IrrepsSpec.parse(text)
    assert str(spec) == text  # the examples are written canonically
    assert IrrepsSpec.parse(str(spec)) == spec
    data = json.loads(json.dumps(spec.to_dict()))  # plain JSON, as in a model config
    assert IrrepsSpec.from_dict(data) == spec == IrrepsSpec.parse(data)
    assert spec.dim == SPECS[text] == spec.build().dim


def test_canonical_form_normalises_spacing_and_continuations():
    spec = IrrepsSpec.parse(" so3 : 1x0 + 2x1\n+1x2 ")
    assert str(spec) == "so3:1x0+2x1+1x2"
    assert spec.parts[0][0].irreps == ((1, 0), (2, 1), (1, 2))
    assert str(IrrepsSpec.parse("t1:4*so3:1x1+1x2")) == "t1:4*so3:(1x1+1x2)"
    assert str(IrrepsSpec.parse("t1:8(base=10000,layout=axial,seed=0)")) == "t1:8"


def test_dict_form_is_stable():
    spec = IrrepsSpec.parse("t1:8+so3@rot:2x1")
    assert spec.to_dict() == {
        "version": 1,
        "parts": [
            [
                {
                    "group": "t1",
                    "attribute": "position",
                    "num_frequencies": 8,
                    "base": 10000.0,
                    "layout": "axial",
                    "seed": 0,
                    "learnable": False,
                }
            ],
            [{"group": "so3", "attribute": "rot", "irreps": [[2, 1]]}],
        ],
    }
    assert spec.attributes == {"position": "t1", "rot": "so3"}


def test_build_gives_the_described_representation():
    rep = IrrepsSpec.parse("t2:4(base=100)+so3:2x1*t1@chain:3").build()
    assert isinstance(rep, DirectSum)
    t2, product = rep.parts
    assert isinstance(t2, TranslationRep) and t2.base == 100.0 and t2.ndim == 2
    assert isinstance(product, TensorProduct) and isinstance(product.a, SO3Rep)
    g = rep.group.sample((4,), generator=0, dtype=torch.float64)
    assert set(g) == {"position", "orientation", "chain"}
    torch.testing.assert_close(
        rep.character(g), t2.character(g) + product.a.character(g) * product.b.character(g)
    )


@pytest.mark.parametrize(
    "bad,message",
    [
        ("", "empty spec"),
        ("so4:1x1", "unknown group 'so4'"),
        ("so3:1.5x1", r"bad so3 irrep '1.5x1'"),
        ("so3:x1", r"bad so3 irrep 'x1'"),
        ("so2:1x-1", r"bad so2 irrep '1x-1'"),
        ("so3:0x1", "expected multiplicity >= 1"),
        ("1x1", "has no group prefix"),
        ("t1:4+1x1", "has no group prefix"),
        ("t1:0", "num_frequencies must be a positive integer"),
        ("t2:3", "axial layout needs a number of frequencies divisible by 2"),
        ("t1:4(base=0.5)", "base must be a number > 1"),
        ("t1:4(foo=1)", "bad option 'foo=1'"),
        ("t1:4(base=abc)", "bad option 'base=abc'"),
        ("t1:four", "bad translation factor"),
        ("so3:1x1*so3:1x2", "a tensor product needs factors on different attributes"),
        ("so3@a:1x1+so2@a:1x1", "attribute 'a' is used for both so3 and so2"),
        ("so3@1a:1x1", "attribute names must be identifiers"),
        ("so3:(1x1", r"unbalanced '\('"),
        ("so3:1x1)", r"unbalanced '\)'"),
        ("so3:1x1++1x2", "empty term"),
    ],
)
def test_malformed_strings_raise(bad, message):
    with pytest.raises(ValueError, match=f"^spec: .*{message}"):
        IrrepsSpec.parse(bad)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"parts": [[{"group": "so3", "irreps": [[1, 1]]}]], "version": 2}, "unsupported version 2"),
        ({"parts": [[{"group": "so3", "irreps": [[1, 1]], "colour": "red"}]]}, r"unknown keys \['colour'\]"),
        ({"parts": [[{"group": "t1"}]]}, "missing 'num_frequencies'"),
        ({"parts": [[{"group": "so3", "irreps": "1x1"}]]}, "'irreps' must be a list"),
        ({"parts": []}, "expected at least one part"),
        ({"layers": []}, "expected a dict with keys 'version' and 'parts'"),
        ({"parts": [[{"group": "so3", "irreps": [[1, True]]}]]}, "must be integers"),
    ],
)
def test_malformed_dicts_raise(bad, message):
    with pytest.raises(ValueError, match=f"^spec: .*{message}"):
        IrrepsSpec.from_dict(bad)


def test_parse_rejects_other_types():
    with pytest.raises(ValueError, match="spec: expected a string, a dict or an IrrepsSpec, got int"):
        IrrepsSpec.parse(3)

"""EGNN's dynamics inside the geo transformer: signed pair weights (``point_messages``), points moved by
every layer (``coordinate_updates``) and raw input vectors carried linearly (``vector_inputs``).
Exactly E(3)-equivariant in phase I in float32 and float64, against loops over pairs as oracles."""

from __future__ import annotations

import pytest
import torch

from geo_pe import quaternion, se3
from geo_pe.testing import assert_close_to_rounding, assert_equivariant, assert_same_weights
from models import GeoTransformerConfig, GeoTransformerForEquivariantRegression
from models.inputs_geo_transformer import PairGeometry

B, T, LAYERS = 3, 5, 3

NBODY = dict(  # benchmarks/published/nbody.yaml's geometry, smaller
    feature_size=2, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
    pe_absolute="s2@position:1x1+s2@velocity:1x1", pe_relative="s2@position:1x1+1x2", pe_relative_mode="gta",
    pe_gate=True, shared_rotations=[["position", "velocity"]], point_attributes=["position"],
    output_attribute="position", distance_bias=6, distance_bias_max=4.0, equivariant_target="position",
    equivariant_level="token", initializer_range=0.2,
)  # fmt: skip
DYNAMICS = dict(point_messages="signed", coordinate_updates=True, vector_inputs=["velocity"])


def make(dtype=torch.float64, phase: str = "equivariant", **overrides):
    """A phase ``phase`` N-body model with the dynamics options (``overrides`` change any key)."""
    config = GeoTransformerConfig(**{**NBODY, **DYNAMICS, "phase_history": [phase], **overrides})
    torch.manual_seed(0)
    return GeoTransformerForEquivariantRegression(config).to(dtype).eval()


def particles(dtype, seed: int = 0) -> dict:
    """Features, points and velocities of B systems; the last system has one padded particle (NaN)."""
    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(B, T, 3, generator=gen, dtype=dtype)
    velocity = torch.randn(B, T, 3, generator=gen, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[-1, -1] = 0
    points[-1, -1] = velocity[-1, -1] = float("nan")
    features = torch.randn(B, T, 2, generator=gen, dtype=dtype)
    positions = {"position": points, "velocity": velocity}
    return {"features": features, "positions": positions, "attention_mask": mask}


def padded_to_zero(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return y.masked_fill(~mask.bool()[..., None], 0)


@pytest.mark.parametrize(
    "settings",
    [
        dict(DYNAMICS),
        dict(DYNAMICS, point_messages="softmax"),
        dict(DYNAMICS, relative_point_values=True),
        dict(DYNAMICS, vector_inputs=None),
        dict(point_messages="signed", relative_point_values=True, vector_inputs=["velocity"]),
        dict(DYNAMICS, pair_scalar_messages=True),
        dict(DYNAMICS, pair_scalar_messages=True, pair_vector_invariants=True),
        dict(DYNAMICS, pair_vector_messages=True),
    ],
    ids=[
        "signed",
        "softmax",
        "signed+point-values",
        "no-vectors",
        "no-coordinate-updates",
        "scalar-messages",
        "vector-invariants",
        "vector-messages",
    ],
)
def test_phase_one_is_e3_equivariant(settings, dtype):
    """A rigid motion x -> R x + t of the points, with v -> R v, moves the predicted positions the same
    way (padding holds NaN); the models differ from one without the options (they are read)."""
    model = make(dtype, **settings)
    batch = particles(dtype)
    mask = batch["attention_mask"]

    def predict(positions):
        return padded_to_zero(model(**{**batch, "positions": positions}).predictions, mask)

    def move(h, positions):
        turned = quaternion.apply(h[..., :4], positions["velocity"])
        return {"position": se3.apply(h, positions["position"]), "velocity": turned}

    def rigid_motion(generator):
        return se3.random(B, 1, generator=generator, dtype=dtype, translation_scale=5.0)

    assert_equivariant(
        predict, (batch["positions"],), rigid_motion, act_in=move,
        act_out=lambda h, y: padded_to_zero(se3.apply(h, y), mask), num_samples=3,
    )  # fmt: skip
    plain = make(dtype, point_messages="softmax", coordinate_updates=False, vector_inputs=None)
    assert (predict(batch["positions"]) - padded_to_zero(plain(**batch).predictions, mask)).abs().max() > 1e-3


def first_layer_pairs(model) -> tuple:
    """The valid tokens, centred points and pair geometry of `particles`, and random logits (B, 4, T, T)."""
    batch = particles(torch.float64)
    mask = batch["attention_mask"].bool()
    points = model.model.inputs.center_points(batch["positions"], B, T, mask)[1]
    pairs = model.model.inputs.pair_geometry(points, mask, torch.float64)
    return mask, points, pairs, torch.randn(B, 4, T, T, dtype=torch.float64)


def test_signed_messages_and_coordinate_steps_against_a_loop():
    """c_ij^h = MLP(logits_ij, radial functions_ij) / (other valid particles), and the step
    sum_j (sum_h w_h c_ij^h) (x_j - x_i), both against loops over pairs; padded pairs carry nothing."""
    model = make()
    mask, points, pairs, scores = first_layer_pairs(model)
    attention = model.model.layers[0].self_attn
    messages, _ = attention._signed_messages(scores, pairs, torch.zeros(B, T, model.config.scalar_size))
    steps = attention._coordinate_steps(messages, pairs.offsets)["position"]
    mix = attention.coordinate_proj["position"].weight[0]
    x = points["position"]
    for b in range(B):
        valid = int(mask[b].sum())
        for i in range(valid):
            expected_step = torch.zeros(3, dtype=torch.float64)
            for j in range(valid):
                features = torch.cat((scores[b, :, i, j], pairs.basis[b, i, j]))
                c = attention.pair_mlp(features) / (valid - 1)
                torch.testing.assert_close(messages[b, :, i, j], c)
                expected_step += (mix * c).sum() * (x[b, j] - x[b, i])
            torch.testing.assert_close(steps[b, i], expected_step)
    assert steps[-1, -1].abs().max() == 0  # the padded particle does not move


def test_pair_scalar_messages_against_a_loop():
    """m_ij = SiLU(W [logits_ij; radial_ij] + b + A s_i + C s_j); c_ij = w . m_ij / (n - 1); the scalars
    receive P mean_{j != i, valid} m_ij (EGNN's edge function and node update), the PE channels nothing."""
    model = make(pair_scalar_messages=True)
    mask, _, pairs, scores = first_layer_pairs(model)
    attention = model.model.layers[0].self_attn
    scalars = torch.randn(B, T, model.config.scalar_size, dtype=torch.float64)
    messages, hidden = attention._signed_messages(scores, pairs, scalars)
    first, _, last = attention.pair_mlp
    own, other = attention.pair_nodes.weight.chunk(2, dim=0)
    for b in range(B):
        valid = int(mask[b].sum())
        for i in range(valid):
            pooled = 0
            for j in range(valid):
                m = torch.nn.functional.silu(
                    first(torch.cat((scores[b, :, i, j], pairs.basis[b, i, j]))) + own @ scalars[b, i]
                    + other @ scalars[b, j]
                )  # fmt: skip
                torch.testing.assert_close(hidden[b, i, j], m)
                torch.testing.assert_close(messages[b, :, i, j], last(m) / (valid - 1))
                pooled = pooled + (m if j != i else 0) / (valid - 1)
            expected = attention.pair_to_scalars(pooled)
            got = (hidden[b, i] * pairs.valid[b, i, :, None]).sum(0) / pairs.neighbours[b, 0, 0, 0]
            torch.testing.assert_close(attention.pair_to_scalars(got), expected)
    torch.testing.assert_close(pairs.valid[-1, :, -1], torch.zeros(T, dtype=torch.float64))  # padded key
    # in the forward, the messages reach the scalars of the first layer's output and no PE channel
    outputs = []
    attention.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    batch = particles(torch.float64)
    model(**batch)
    with torch.no_grad():
        attention.pair_to_scalars.weight.zero_()
    model(**batch)
    change = (outputs[0] - outputs[1]).abs()
    s = model.config.scalar_size
    assert change[..., :s].max() > 1e-6 and change[..., s:].max() == 0


def test_pair_vector_invariants_against_a_loop():
    """The pair MLP reads r_ij . v_i, r_ij . v_j and v_i . v_j (r_ij = x_j - x_i), computed per pair in a
    loop; padded pairs read zeros, and the invariants change the messages."""
    model = make(pair_vector_invariants=True)
    batch = particles(torch.float64)
    mask = batch["attention_mask"].bool()
    inputs = model.model.inputs
    points = inputs.center_points(batch["positions"], B, T, mask)[1]
    vectors = inputs.vectors(batch["positions"], B, T, mask, torch.float64)
    pairs = inputs.pair_geometry(points, mask, torch.float64, vectors)
    x, v = points["position"], vectors["velocity"]
    for b in range(B):
        for i in range(T):
            for j in range(T):
                if not (mask[b, i] and mask[b, j]):
                    assert pairs.invariants[b, i, j].abs().max() == 0
                    continue
                r = x[b, j] - x[b, i]
                expected = torch.stack((r @ v[b, i], r @ v[b, j], v[b, i] @ v[b, j]))
                torch.testing.assert_close(pairs.invariants[b, i, j], expected)
    attention = model.model.layers[0].self_attn
    scores = torch.randn(B, 4, T, T, dtype=torch.float64)
    messages, _ = attention._signed_messages(scores, pairs, torch.zeros(B, T, model.config.scalar_size))
    features = torch.cat((scores[0, :, 1, 2], pairs.basis[0, 1, 2], pairs.invariants[0, 1, 2]))
    torch.testing.assert_close(messages[0, :, 1, 2], attention.pair_mlp(features) / (T - 1))
    blind = PairGeometry(pairs.basis, pairs.offsets, pairs.neighbours, pairs.valid, 0 * pairs.invariants)
    unseen, _ = attention._signed_messages(scores, blind, torch.zeros(B, T, model.config.scalar_size))
    assert (messages - unseen).abs().max() > 1e-6


def test_pair_vector_messages_against_a_loop():
    """The step adds sum_j (sum_h u_h c_ij^h) (v_j - v_i) over the valid particles, u the layer's own
    mix of the heads; padded particles add nothing."""
    model = make(pair_vector_messages=True)
    batch = particles(torch.float64)
    mask = batch["attention_mask"].bool()
    inputs = model.model.inputs
    points = inputs.center_points(batch["positions"], B, T, mask)[1]
    vectors = inputs.vectors(batch["positions"], B, T, mask, torch.float64)
    pairs = inputs.pair_geometry(points, mask, torch.float64, vectors)
    attention = model.model.layers[0].self_attn
    with torch.no_grad():  # a mix large enough to see
        attention.vector_message_proj["velocity"].weight.normal_()
    messages = torch.randn(B, 4, T, T, dtype=torch.float64)
    steps = attention._coordinate_steps(messages, pairs.offsets, pairs.vector_offsets)["position"]
    still = {name: torch.zeros_like(d) for name, d in pairs.vector_offsets.items()}
    without = attention._coordinate_steps(messages, pairs.offsets, still)["position"]
    mix = attention.vector_message_proj["velocity"].weight[0]
    v = vectors["velocity"]
    for b in range(B):
        valid = int(mask[b].sum())
        for i in range(valid):
            expected = sum((mix * messages[b, :, i, j]).sum() * (v[b, j] - v[b, i]) for j in range(valid))
            torch.testing.assert_close(steps[b, i] - without[b, i], expected)
    # a later layer's geometry (moved points) keeps the input vectors' differences: they never move
    moved = {name: x + 0.5 for name, x in points.items()}
    carried = inputs.pair_geometry(moved, mask, torch.float64, vectors, pairs)
    fresh = inputs.pair_geometry(moved, mask, torch.float64, vectors)
    assert carried.vector_offsets is pairs.vector_offsets
    assert torch.equal(carried.vector_offsets["velocity"], fresh.vector_offsets["velocity"])


def test_each_layer_reads_the_points_the_previous_one_moved():
    """Layer l's pair geometry is that of the points after the steps of layers 0 .. l-1, and the model's
    displacements are the sum of all the steps."""
    model = make()
    batch = particles(torch.float64)
    mask = batch["attention_mask"].bool()
    seen, steps = [], []
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(lambda module, args, out: seen.append(args[-1]))
        layer.register_forward_hook(lambda module, args, out: steps.append(out[2]["position"]))
    out = model.model(**batch)
    start = model.model.inputs.center_points(batch["positions"], B, T, mask)[1]["position"]
    x = start
    for pairs, step in zip(seen, steps, strict=True):
        expected = model.model.inputs.pair_geometry({"position": x}, mask, torch.float64)
        torch.testing.assert_close(pairs.basis, expected.basis)
        torch.testing.assert_close(pairs.offsets["position"], expected.offsets["position"])
        x = x + step
    assert len(seen) == LAYERS
    torch.testing.assert_close(out.displacements["position"], padded_to_zero(x - start, mask))


def test_a_constant_velocity_term_moves_points_by_exactly_that_much():
    """phi_v = c (zero weights, bias c) and no pair weights: every layer moves x by c v, so positions are
    x + layers c v, with no bound on the displacement (the head's own correction switched off)."""
    model = make()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.coordinate_proj["position"].weight.zero_()
            last = layer.vector_steps["velocity"][-1]
            last.weight.zero_()
            last.bias.fill_(2.5)
        model.equivariant_proj.weight_param.coefficients.zero_()
    batch = particles(torch.float64)
    out = model(**batch)
    x, v = batch["positions"]["position"], batch["positions"]["velocity"]
    mask = batch["attention_mask"]
    expected = x + LAYERS * 2.5 * v
    torch.testing.assert_close(padded_to_zero(out.predictions, mask), padded_to_zero(expected, mask))
    assert padded_to_zero(out.predictions - x, mask).norm(dim=-1).max() > 10  # far beyond any cap


def test_vector_inputs_enter_the_degree_one_channels_linearly():
    """The input step adds s_k v to every degree-1 block k that turns with v, in D_1's (y, z, x) order;
    the state depends on |v|, not only on its direction."""
    model = make(coordinate_updates=False, point_messages="softmax", relative_point_values=True)
    embedding = model.model.vector_embedding
    starts = embedding.channels["velocity"]
    assert len(starts) == 2  # the position and velocity directions: one frame (shared_rotations)
    with torch.no_grad():
        embedding.scales["velocity"].copy_(torch.tensor([0.7, -1.3]))
    v = torch.randn(B, T, 3, dtype=torch.float64)
    update = embedding({"velocity": v})
    expected = torch.zeros(B, T, model.config.hidden_size, dtype=torch.float64)
    for scale, start in zip((0.7, -1.3), starts, strict=True):
        expected[..., start : start + 3] = scale * v[..., [1, 2, 0]]
    torch.testing.assert_close(update, expected)
    batch = particles(torch.float64)
    faster = {**batch["positions"], "velocity": 2 * batch["positions"]["velocity"]}
    mask = batch["attention_mask"]
    a = padded_to_zero(model(**batch).predictions, mask)
    b = padded_to_zero(model(**{**batch, "positions": faster}).predictions, mask)
    assert (a - b).abs().max() > 1e-3


def test_the_switch_keeps_the_function_and_phase_two_trains(tmp_path):
    """set_phase('free') keeps the outputs; a saved and reloaded model has the same weights and outputs
    (the constant placements of the vector inputs are rebuilt); phase II gets gradients everywhere."""
    model = make(pair_scalar_messages=True)
    batch = particles(torch.float64)
    mask = batch["attention_mask"]
    before = padded_to_zero(model(**batch).predictions, mask)
    model.set_phase("free")
    after = padded_to_zero(model(**batch).predictions, mask)
    assert_close_to_rounding(after, before)
    model.save_pretrained(tmp_path / "model")
    loaded = GeoTransformerForEquivariantRegression.from_pretrained(tmp_path / "model").double().eval()
    assert_same_weights(loaded, model)
    assert_close_to_rounding(padded_to_zero(loaded(**batch).predictions, mask), after)
    labels = torch.nan_to_num(batch["positions"]["position"]) + 0.1
    loaded.train()
    loaded(**batch, labels=labels).loss.backward()
    names = (
        "pair_mlp",
        "coordinate_proj",
        "vector_steps",
        "vector_embedding",
        "pair_nodes",
        "pair_to_scalars",
    )
    for name in names:
        grads = [p.grad for n, p in loaded.named_parameters() if name in n]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().max() > 0 for g in grads), name


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"point_messages": "relu"}, r"point_messages: expected one of \('softmax', 'signed'\)"),
        ({"distance_bias": 0}, r"point_messages: 'signed' .* set one of them and distance_bias"),
        ({"coordinate_updates": False}, r"point_messages: 'signed' weighs"),
        ({"point_messages": "softmax", "pair_scalar_messages": True}, r"pair_scalar_messages: they are the"),
        ({"pair_vector_messages": True, "coordinate_updates": False, "relative_point_values": True},
         r"pair_vector_messages: they move the points by the input vectors' differences"),
        ({"pair_vector_invariants": True, "vector_inputs": None},
         r"pair_vector_invariants: the pair MLP of point_messages='signed' reads them from the vector"),
        ({"point_messages": "softmax", "point_attributes": None, "distance_bias": 0},
         r"coordinate_updates: they move points; set point_attributes"),
        ({"vector_inputs": ["speed"]}, r"vector_inputs: 'speed' is not an s2 attribute"),
        ({"vector_inputs": ["position"]}, r"vector_inputs: 'position' is not an s2 attribute .* other than"),
        ({"shared_rotations": None}, r"vector_inputs: 'velocity' moves the points .* shared_rotations"),
        ({"pe_absolute": None, "pe_gate": False, "coordinate_updates": False, "point_messages": "softmax"},
         r"vector_inputs: they enter the degree-1 channels of pe_absolute or move the points"),
    ],
)  # fmt: skip
def test_bad_dynamics_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        GeoTransformerConfig(**{**NBODY, **DYNAMICS, "output_attribute": None, **overrides})


def test_a_vector_input_of_the_wrong_shape_is_named():
    model = make()
    batch = particles(torch.float64)
    bad = {**batch["positions"], "velocity": batch["positions"]["velocity"][..., :2]}
    with pytest.raises(ValueError, match=r"positions\['velocity'\]: expected vectors of shape \(3, 5, 3\)"):
        model(**{**batch, "positions": bad})


def test_vector_inputs_without_degree_one_channels_are_named():
    message = r"vector_inputs: pe_absolute='s2@position:1x2.*no degree-1 channels"
    with pytest.raises(ValueError, match=message):
        make(
            pe_absolute="s2@position:1x2+s2@velocity:1x2", hidden_size=30, num_attention_heads=3,
            pe_relative="s2@position:1x2+5x0",
            coordinate_updates=False, point_messages="softmax", relative_point_values=False,
        )  # fmt: skip

"""EGNN (Satorras, Hoogeboom and Welling 2021), the velocity variant of its N-body experiment, written from
the paper's equations; the peer a user would pick for this system.

Per layer, over all pairs i != j (dense: the systems are small):

    m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, a_ij)
    x_i <- x_i + mean_j (x_i - x_j) phi_x(m_ij) + phi_v(h_i) v_i
    h_i <- h_i + phi_h(h_i, sum_j m_ij)

with h_i initialised from |v_i|, a_ij = q_i q_j, and v_i the input velocity. The output is the positions
after the last layer: E(3)-equivariant in (x, v) and invariant in the charges. The paper's settings are
the defaults: 4 layers, 64 channels, SiLU, Adam at 5e-4, batches of 100.

``input_distance_edges`` adds the authors' released N-body script's second edge attribute, the input
squared distance |x_i - x_j|^2 (which later layers would otherwise see only as moved), and drops the bias
of phi_x's last layer as that script does; off, the model is the paper's equations alone.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def _mlp(sizes: list[int], last_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EquivariantLayer(nn.Module):
    """One E(n)-equivariant graph convolution with the velocity term (dense over particles)."""

    def __init__(self, hidden: int, edge_features: int = 1, coordinate_bias: bool = True):
        super().__init__()
        self.edge = _mlp([2 * hidden + 1 + edge_features, hidden, hidden], last_activation=True)
        self.node = _mlp([2 * hidden, hidden, hidden])
        self.coordinate = _mlp([hidden, hidden, 1])
        if not coordinate_bias:
            self.coordinate[-1].bias = None
        nn.init.xavier_uniform_(self.coordinate[-1].weight, gain=0.001)  # small first steps, as in the paper
        self.velocity = _mlp([hidden, hidden, 1])

    def forward(self, h, x, v, edge_attr, pair_mask):
        """``h (B, n, hidden)``, ``x, v (B, n, 3)``, ``edge_attr (B, n, n, e)``, ``pair_mask (n, n)``."""
        diff = x[:, :, None, :] - x[:, None, :, :]  # (B, n, n, 3): x_i - x_j
        radial = diff.pow(2).sum(-1, keepdim=True)
        # phi_e's first layer on [h_i, h_j, r, a] is W_i h_i + W_j h_j + w_r r + W_a a + b: the node
        # terms are computed per node, not per pair (the same map, n times fewer products)
        first = self.edge[0]
        hidden = h.shape[-1]
        w_i, w_j = first.weight[:, :hidden], first.weight[:, hidden : 2 * hidden]
        w_rest = first.weight[:, 2 * hidden :]
        pre = (h @ w_i.T)[:, :, None] + (h @ w_j.T)[:, None] + torch.cat((radial, edge_attr), -1) @ w_rest.T
        m = self.edge[1:](pre + first.bias) * pair_mask[..., None]
        x = x + (diff * self.coordinate(m)).sum(2) / (h.shape[1] - 1) + self.velocity(h) * v
        h = h + self.node(torch.cat((h, m.sum(2)), -1))
        return h, x


class EGNN(nn.Module):
    """Positions after ``layers`` EGNN layers from positions, velocities and charges ``(B, n)``."""

    def __init__(self, hidden: int = 64, layers: int = 4, input_distance_edges: bool = False):
        super().__init__()
        self.input_distance_edges = input_distance_edges
        self.embed = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(
            EquivariantLayer(hidden, 1 + input_distance_edges, coordinate_bias=not input_distance_edges)
            for _ in range(layers)
        )

    def forward(
        self, positions: torch.Tensor, velocities: torch.Tensor, charges: torch.Tensor
    ) -> torch.Tensor:
        n = positions.shape[1]
        h = self.embed(velocities.norm(dim=-1, keepdim=True))
        edge_attr = (charges[:, :, None] * charges[:, None, :])[..., None]
        if self.input_distance_edges:
            squared = (positions[:, :, None] - positions[:, None]).pow(2).sum(-1, keepdim=True)
            edge_attr = torch.cat((edge_attr, squared), -1)
        pair_mask = 1.0 - torch.eye(n, dtype=positions.dtype, device=positions.device)
        x = positions
        for layer in self.layers:
            h, x = layer(h, x, velocities, edge_attr, pair_mask)
        return x

"""Small MLPs and multi-head deformation decoders for neural fields.

``MLP`` is a plain fully connected network (the CPU/torch stand-in for tcnn's FullyFusedMLP). ``DeformationHeads``
is Swift4D's decoder (gaussian_methods.md §1.3): a shared trunk on the hash encoding, then one small MLP per
Gaussian attribute producing a *delta*. Every head's last layer is zero-initialised, so at initialisation all
deltas are exactly zero and the deformed Gaussians equal the canonical ones: training starts from the static
reconstruction instead of from noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["MLP", "DeformationHeads", "make_activation"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "none": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """Activation module by name: relu, silu, softplus, gelu, tanh, sigmoid, leaky_relu, none (or None)."""
    key = "none" if name is None else name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


class MLP(nn.Module):
    """Fully connected network: [..., in_dim] -> [..., out_dim].

    Args:
        in_dim: input width.
        hidden_dim: width of every hidden layer.
        out_dim: output width.
        n_layers: number of hidden layers (0 gives a single linear layer in -> out).
        activation: hidden activation name (see :func:`make_activation`).
        out_activation: activation applied to the output (default none).
        bias: use biases (tcnn's FullyFusedMLP has none; here they are cheap and help small nets).
        zero_init_last: zero the last layer's weight and bias, so the MLP outputs exactly 0 at init.

    Init: Kaiming-uniform (fan-in, gain for ReLU-like nets) on hidden layers, biases zero, which keeps activation
    variance stable through depth; the last layer uses a smaller (fan-in, linear-gain) init unless zeroed.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        n_layers: int = 2,
        activation: str = "relu",
        out_activation: str | None = None,
        bias: bool = True,
        zero_init_last: bool = False,
    ):
        super().__init__()
        if n_layers < 0:
            raise ValueError("n_layers must be >= 0")
        self.in_dim, self.out_dim = in_dim, out_dim
        dims = [in_dim] + [hidden_dim] * n_layers + [out_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                layers.append(make_activation(activation))
        self.layers = nn.Sequential(*layers)
        self.out_activation = make_activation(out_activation)
        self._activation = activation
        self.reset_parameters(zero_init_last)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def reset_parameters(self, zero_init_last: bool = False) -> None:
        linears = self.linears
        nonlinearity = "relu" if self._activation in ("relu", "leaky_relu", "silu", "gelu", "softplus") else "linear"
        for lin in linears[:-1]:
            nn.init.kaiming_uniform_(lin.weight, nonlinearity=nonlinearity)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        last = linears[-1]
        if zero_init_last:
            nn.init.zeros_(last.weight)
        else:
            nn.init.kaiming_uniform_(last.weight, nonlinearity="linear")
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_activation(self.layers(x))


class DeformationHeads(nn.Module):
    """Shared trunk + one MLP head per named output: [..., in_dim] -> {name: [..., width]}.

    Default shapes: a trunk with 1 hidden layer of 128 and a 128-wide ReLU output, then heads with 2 hidden layers
    of 128 each and linear outputs (Swift4D's decoder; its heads are in ``recon/methods/swift4d/field.py``).

    The last layer of every head is zero-initialised, so every delta is exactly zero at init whatever the
    input (identity deformation), while gradients still reach the last layers (their input is the non-zero
    trunk features), so training leaves the identity immediately.

    How the deltas are applied is the caller's business; Swift4D adds them to the raw (pre-activation)
    parameters: xyz + Δ, log-scale + Δ, quaternion + Δ then normalise, opacity logit + Δ, SH + Δ.

    Args:
        in_dim: encoding width (e.g. ``HashGridEncoding.n_output_dims``).
        heads: name -> output width, e.g. ``{"xyz": 3, "sh": K * 3}`` for a position and K SH coefficients.
        trunk_hidden / trunk_layers / trunk_out: trunk MLP shape; ``trunk_layers=None`` skips the trunk.
        trunk_out_activation: activation on the trunk output (Swift4D: relu; none for some scenes).
        head_hidden / head_layers: shape of each head.
        activation: hidden activation.
    """

    def __init__(
        self,
        in_dim: int,
        heads: Mapping[str, int],
        trunk_hidden: int = 128,
        trunk_layers: int | None = 1,
        trunk_out: int = 128,
        trunk_out_activation: str | None = "relu",
        head_hidden: int = 128,
        head_layers: int = 2,
        activation: str = "relu",
    ):
        super().__init__()
        heads = dict(heads)
        if not heads:
            raise ValueError("need at least one head")
        if trunk_layers is None:
            self.trunk = nn.Identity()
            feat = in_dim
        else:
            self.trunk = MLP(in_dim, trunk_hidden, trunk_out, trunk_layers, activation, trunk_out_activation)
            feat = trunk_out
        self.head_dims = heads
        self.heads = nn.ModuleDict(
            {name: MLP(feat, head_hidden, width, head_layers, activation, zero_init_last=True) for name, width in heads.items()}
        )

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """features: [..., in_dim] -> {name: [..., width]} deltas (all exactly zero at init)."""
        h = self.trunk(features)
        return {name: head(h) for name, head in self.heads.items()}

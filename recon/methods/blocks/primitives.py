"""The blocks: N textured superquadrics with a per-block opacity, and the terms that act on them alone."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.geometry.superquadric import SuperquadricTemplate, pseudo_sdf, sample_in_boxes, superquadric_points
from recon.render.mesh_texture import decimate_texture
from recon.rotations import rot6d_to_rotmat, rotmat_to_rot6d

#: exponents live in (E_MIN, E_MIN + E_RANGE) = (0.1, 1.9): convex, from nearly square to nearly diamond.
E_MIN, E_RANGE = 0.1, 1.8
#: semi-axes = unit * (S_FLOOR + exp(raw)); the floor keeps blocks from collapsing to slivers (the paper's 0.2).
S_FLOOR = 0.2


class BlockSet(nn.Module):
    """Parameters of ``n`` blocks; sizes are in units of the object region's radius so that the paper's learning rates
    keep their meaning whatever the scene's scale.

    Parameters: ``raw_exponents`` [n, 2], ``raw_scales`` [n, 3], ``rot6d`` [n, 6], ``offsets`` [n, 3] (translation
    from the region's centre, in region radii), ``opacity_logits`` [n], ``texture_logits`` [n, T, T, 3].
    Buffers: ``alive`` [n] bool (killed blocks never return), ``opaque`` (after the coarse phase), ``center`` [3],
    ``radius`` (the region), ``unit`` (semi-axis unit = radius / 4, the paper's block-to-scene ratio).
    """

    def __init__(self, n: int, texture_size: int):
        super().__init__()
        self.raw_exponents = nn.Parameter(torch.zeros(n, 2))
        self.raw_scales = nn.Parameter(torch.zeros(n, 3))
        self.rot6d = nn.Parameter(rotmat_to_rot6d(torch.eye(3)).repeat(n, 1))
        self.offsets = nn.Parameter(torch.zeros(n, 3))
        self.opacity_logits = nn.Parameter(torch.zeros(n))
        self.texture_logits = nn.Parameter(torch.zeros(n, texture_size, texture_size, 3))
        self.register_buffer("alive", torch.ones(n, dtype=torch.bool))
        self.register_buffer("opaque", torch.tensor(False))
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("radius", torch.tensor(1.0))

    @property
    def unit(self) -> Tensor:
        return self.radius / 4.0

    @torch.no_grad()
    def initialize(self, centers, rotations, scales, colors, center, radius, generator: torch.Generator) -> None:
        """Set blocks from an initialisation (numpy arrays: centres [n, 3], rotations [n, 3, 3], semi-axes [n, 3],
        colours [n, 3]) in the object region (``center`` [3], ``radius``)."""
        dev = self.offsets.device
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)  # noqa: E731
        self.center.copy_(t(center))
        self.radius.fill_(float(radius))
        self.offsets.copy_((t(centers) - self.center) / self.radius)
        self.rot6d.copy_(rotmat_to_rot6d(t(rotations)))
        rel = (t(scales) / self.unit - S_FLOOR).clamp_min(0.05)
        self.raw_scales.copy_(rel.log())
        self.raw_exponents.zero_()  # e = 1: every block starts as an ellipsoid
        self.opacity_logits.zero_()  # opacity 0.5
        c = t(colors).clamp(0.02, 0.98)
        noise = torch.randn(self.texture_logits.shape, generator=generator, device="cpu").to(dev) * 0.1
        self.texture_logits.copy_(torch.logit(c)[:, None, None, :] + noise)
        self.alive.fill_(True)
        self.opaque.fill_(False)

    # ------------------------------------------------------------------ shape and pose
    def exponents(self) -> Tensor:
        return E_MIN + E_RANGE * torch.sigmoid(self.raw_exponents)

    def scales(self) -> Tensor:
        return self.unit * (S_FLOOR + self.raw_scales.exp())

    def rotations(self) -> Tensor:
        return rot6d_to_rotmat(self.rot6d)

    def translations(self) -> Tensor:
        return self.center + self.radius * self.offsets

    def world_vertices(self, template: SuperquadricTemplate) -> Tensor:
        """[n, V, 3] every block's template vertices in the scene frame."""
        local = superquadric_points(template, self.exponents(), self.scales())
        return torch.einsum("bij,bvj->bvi", self.rotations(), local) + self.translations()[:, None, :]

    # ------------------------------------------------------------------ appearance
    def opacities(self, noise: Tensor | None = None) -> Tensor:
        """[n] opacity (1 for the survivors once opaque, 0 for killed blocks); ``noise`` [n] is added to the logits."""
        if bool(self.opaque):
            return self.alive.float()
        logits = self.opacity_logits if noise is None else self.opacity_logits + noise
        return torch.sigmoid(logits) * self.alive.float()

    def textures(self, decimate: int = 1) -> Tensor:
        """[n, T, T, 3] colours in [0, 1]; ``decimate`` > 1 average-pools and upsamples back (the coarse phase)."""
        return decimate_texture(torch.sigmoid(self.texture_logits), decimate)

    # ------------------------------------------------------------------ regularisers
    def parsimony(self) -> Tensor:
        """Mean over live blocks of sqrt(opacity): the square root rewards switching whole blocks off."""
        a = self.opacities()[self.alive]
        return a.clamp_min(1e-8).sqrt().mean() if a.numel() else a.sum()

    def overlap(self, n_points: int, temperature: float, limit: float, generator: torch.Generator | None = None) -> Tensor:
        """Mean excess of the summed soft occupancy over ``limit`` at ``n_points`` points drawn in each live block's box.

        Occupancy of block j at x = sigmoid(-pseudo_sdf_j(x) / temperature) * opacity_j, so a point inside two opaque
        blocks scores about 2 and is charged; inside one it scores 1 and is free.
        """
        idx = torch.nonzero(self.alive).squeeze(1)
        if idx.numel() < 2:
            return self.offsets.sum() * 0.0
        e, s, R, T = self.exponents()[idx], self.scales()[idx], self.rotations()[idx], self.translations()[idx]
        a = self.opacities()[idx]
        local = sample_in_boxes(n_points, s.detach(), generator)  # [b, n, 3]: where to look, not differentiated
        world = (torch.einsum("bij,bnj->bni", R, local) + T[:, None, :]).reshape(-1, 3)
        in_each = torch.einsum("bji,bnj->bni", R, world[None] - T[:, None, :])  # [b, b*n, 3] in each block's frame
        occ = torch.sigmoid(-pseudo_sdf(in_each, e, s) / temperature) * a[:, None]
        return F.relu(occ.sum(0) - limit).mean()

    def texture_tv(self) -> Tensor:
        """Sum over live blocks of the mean squared difference of neighbouring texels (u wraps around the seam)."""
        tex = torch.sigmoid(self.texture_logits)[self.alive]
        du = (tex - tex.roll(1, dims=2)).square().mean((1, 2, 3))
        dv = (tex[:, 1:] - tex[:, :-1]).square().mean((1, 2, 3))
        return (du + dv).sum()

    def count(self, threshold: float = 0.5) -> int:
        """Blocks whose opacity exceeds ``threshold`` (the paper's #P)."""
        return int((self.opacities() > threshold).sum())


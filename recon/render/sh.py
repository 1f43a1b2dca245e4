"""Real spherical harmonics up to degree 3, evaluated in torch (differentiable in coefficients and directions).

Same basis, ordering and sign convention as gsplat / the INRIA 3DGS code (coefficient k of an [..., K, 3] tensor
multiplies basis function k), written in Sloan's polynomial form ("Efficient Spherical Harmonic Evaluation",
JCGT 2013), which is exact for unit directions. The caller adds 0.5 and clamps, as 3DGS does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SH_C0 = 0.28209479177387814


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def _bases(degree: int, dirs: Tensor) -> list[Tensor]:
    """The (degree+1)^2 basis values at unit directions `dirs` [..., 3], as a list of [...] tensors."""
    x, y, z = dirs.unbind(-1)
    out: list[Tensor] = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        c1 = 0.48860251190292
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree >= 2:
        z2 = z * z
        c_xy = x * x - y * y  # cos(2 phi) sin^2(theta)
        s_xy = 2.0 * x * y  # sin(2 phi) sin^2(theta)
        tb = -1.092548430592079 * z
        out += [
            0.5462742152960395 * s_xy,
            tb * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            tb * x,
            0.5462742152960395 * c_xy,
        ]
    if degree >= 3:
        c3 = x * c_xy - y * s_xy  # cos(3 phi) sin^3(theta)
        s3 = x * s_xy + y * c_xy  # sin(3 phi) sin^3(theta)
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        tb3 = 1.445305721320277 * z
        out += [
            -0.5900435899266435 * s3,
            tb3 * s_xy,
            tc * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tc * x,
            tb3 * c_xy,
            -0.5900435899266435 * c3,
        ]
    if degree > 3:
        raise ValueError(f"sh_degree must be in 0..3, got {degree}")
    return out


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluates SH colours.

    Args:
        degree: SH degree to use, 0..3 (only the first (degree+1)^2 coefficients are read).
        dirs: viewing directions (need not be normalised) [..., 3]; from the camera centre to the Gaussian.
        coeffs: SH coefficients [..., K, 3] with K >= (degree+1)^2, broadcastable against dirs[..., None, :].

    Returns:
        colours before the +0.5 offset, [..., 3].
    """
    n = num_sh_bases(degree)
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh_degree {degree} needs {n} coefficients, got {coeffs.shape[-2]}")
    if degree == 0:
        return SH_C0 * coeffs[..., 0, :]
    d = F.normalize(dirs, p=2, dim=-1)
    basis = torch.stack(_bases(degree, d), dim=-1)  # [..., n]
    return (basis[..., None] * coeffs[..., :n, :]).sum(dim=-2)


def _sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis values [M, (degree+1)²] at unit directions [M, 3], in gsplat/3DGS ordering and signs."""
    return torch.stack(_bases(degree, dirs), -1)


def sh_rotation_matrix(rotation: Tensor, degree: int, samples: int = 512) -> Tensor:
    """[K, K] matrix M with ``coeffs_rotated = M @ coeffs`` for a world rotation ``rotation`` [3, 3].

    The rotated function is f'(d) = f(Rᵀ d); each SH band is closed under rotation, so fitting M by least squares
    on well-spread sample directions is exact (up to float precision) and avoids Wigner-D bookkeeping.
    """
    g = torch.Generator().manual_seed(0)
    d = torch.randn(samples, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    R = rotation.double()
    Y = _sh_basis(d, degree)  # [M, K]
    Y_src = _sh_basis(d @ R, degree)  # f'(d) = f(R^T d); rows are (R^T d)^T = d^T R
    # Y @ c' = Y_src @ c for all c  =>  c' = pinv(Y) @ Y_src @ c
    return torch.linalg.lstsq(Y, Y_src).solution.float()

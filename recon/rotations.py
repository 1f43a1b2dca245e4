"""Quaternions and rotation matrices: the one copy of this math in recon.

Convention everywhere: quaternions are ``(w, x, y, z)`` (scalar first, as gsplat, COLMAP and the Gaussian PLY
format store them) and Hamilton products; ``quat_to_rotmat`` accepts any norm (Gaussian methods optimise
unnormalised quaternions), ``rotmat_to_quat`` returns unit quaternions with ``w >= 0``.

Tensors stay tensors (differentiable: the rasterizer's projection backpropagates through ``quat_to_rotmat``);
numpy arrays go through the same torch code in float64 and come back as float64 arrays (the data readers work in
numpy).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


def quat_to_rotmat(quats: ArrayOrTensor) -> ArrayOrTensor:
    """[..., 4] wxyz quaternions (any norm; normalised here) -> [..., 3, 3] rotation matrices."""
    if not isinstance(quats, Tensor):
        return quat_to_rotmat(torch.as_tensor(np.asarray(quats, dtype=np.float64))).numpy()
    w, x, y, z = F.normalize(quats, p=2, dim=-1).unbind(-1)
    xx, yy, zz, xy, xz, yz, wx, wy, wz = x * x, y * y, z * z, x * y, x * z, y * z, w * x, w * y, w * z
    R = torch.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        dim=-1,
    )  # fmt: skip
    return R.reshape(quats.shape[:-1] + (3, 3))


def rotmat_to_quat(R: ArrayOrTensor) -> ArrayOrTensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit wxyz quaternions with w >= 0.

    Picks the largest of the four pivots (trace, R00, R11, R22) per matrix, so the square root is never taken of a
    small number: stable near 180-degree rotations, where the trace-only formula divides by ~0.
    """
    if not isinstance(R, Tensor):
        return rotmat_to_quat(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()
    m = R.reshape(-1, 3, 3)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = m.reshape(-1, 9).unbind(-1)
    k = torch.stack([r00 + r11 + r22, r00, r11, r22], -1).argmax(-1)
    # 4 q_k^2 for the chosen component; the other three follow from off-diagonal sums and differences.
    four_q2 = torch.stack(
        [1.0 + (r00 + r11 + r22), 1.0 + r00 - r11 - r22, 1.0 + r11 - r00 - r22, 1.0 + r22 - r00 - r11], -1
    )
    s = 2.0 * torch.sqrt(four_q2.gather(-1, k[:, None])[:, 0].clamp_min(0.0))
    s = s.clamp_min(torch.finfo(m.dtype).tiny)  # only a non-rotation can make all pivots vanish
    candidates = torch.stack(
        [
            torch.stack([0.25 * s, (r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s], -1),
            torch.stack([(r21 - r12) / s, 0.25 * s, (r01 + r10) / s, (r02 + r20) / s], -1),
            torch.stack([(r02 - r20) / s, (r01 + r10) / s, 0.25 * s, (r12 + r21) / s], -1),
            torch.stack([(r10 - r01) / s, (r02 + r20) / s, (r12 + r21) / s, 0.25 * s], -1),
        ],
        1,
    )  # [M, 4 (pivot), 4 (wxyz)]
    q = candidates.gather(1, k[:, None, None].expand(-1, 1, 4))[:, 0]
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions [..., 4] (the rotation ``b`` first, then ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def rot6d_to_rotmat(d6: Tensor) -> Tensor:
    """Continuous 6D rotation representation (Zhou et al. 2019) -> rotation matrices.

    The 6 numbers are the first two columns of the matrix before Gram-Schmidt; unlike quaternions or Euler angles the
    map is continuous and has no double cover, which is why primitive fitting optimises it directly.

    Args:
        d6: [..., 6] (column 1, then column 2).
    Returns:
        [..., 3, 3] proper rotations.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(R: Tensor) -> Tensor:
    """[..., 3, 3] rotations -> [..., 6], the inverse of :func:`rot6d_to_rotmat` on proper rotations."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)

"""recon.rotations against an independent reference (scipy.spatial.transform.Rotation)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from recon.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat


def _random_wxyz(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def _scipy_matrix(wxyz: np.ndarray) -> np.ndarray:
    return Rotation.from_quat(wxyz[..., [1, 2, 3, 0]]).as_matrix()  # scipy stores xyzw and normalises


def test_quat_to_rotmat_matches_scipy_for_any_norm():
    q = _random_wxyz(200, 0) * np.random.default_rng(1).uniform(0.1, 5.0, size=(200, 1))
    np.testing.assert_allclose(quat_to_rotmat(q), _scipy_matrix(q), atol=1e-12)
    out = quat_to_rotmat(torch.tensor(q, dtype=torch.float32))
    assert out.dtype == torch.float32 and out.shape == (200, 3, 3)
    np.testing.assert_allclose(out.numpy(), _scipy_matrix(q), atol=1e-5)


def test_quat_to_rotmat_batch_shapes_and_numpy_path():
    q = _random_wxyz(6, 2).reshape(2, 3, 4)
    R = quat_to_rotmat(q)
    assert isinstance(R, np.ndarray) and R.dtype == np.float64 and R.shape == (2, 3, 3, 3)
    assert quat_to_rotmat(q[0, 0]).shape == (3, 3)  # a single quaternion
    np.testing.assert_allclose(R.reshape(-1, 3, 3), _scipy_matrix(q.reshape(-1, 4)), atol=1e-12)


def test_quat_to_rotmat_gradient_matches_finite_differences():
    q = torch.tensor(_random_wxyz(3, 4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quat_to_rotmat, (q,))


def test_rotmat_to_quat_matches_scipy_including_half_turns():
    rots = [Rotation.random(300, random_state=5)]
    # 180-degree turns about each axis and a diagonal, and near-identity: the pivots the trace formula fails on.
    axes = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3]])
    rots.append(Rotation.from_rotvec(np.pi * axes / np.linalg.norm(axes, axis=1, keepdims=True)))
    rots.append(Rotation.from_rotvec(np.full((1, 3), 1e-9)))
    for rot in rots:
        ref = rot.as_quat()[:, [3, 0, 1, 2]]  # wxyz
        ref = np.where(ref[:, :1] < 0, -ref, ref)
        q = rotmat_to_quat(rot.as_matrix())
        assert q.shape == (len(ref), 4) and (q[:, 0] >= 0).all()
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
        # q and -q are the same rotation; at w = 0 the sign is free, so compare matrices there
        np.testing.assert_allclose(quat_to_rotmat(q), rot.as_matrix(), atol=1e-12)
        away = np.abs(ref[:, 0]) > 1e-6
        np.testing.assert_allclose(q[away], ref[away], atol=1e-12)


def test_rotmat_to_quat_tensor_and_single_matrix():
    R = Rotation.random(4, random_state=6).as_matrix()
    q = rotmat_to_quat(torch.tensor(R, dtype=torch.float32))
    assert q.dtype == torch.float32 and q.shape == (4, 4)
    np.testing.assert_allclose(quat_to_rotmat(q).numpy(), R, atol=1e-5)
    assert rotmat_to_quat(R[0]).shape == (4,)


def test_quat_multiply_composes_rotations_like_scipy():
    a, b = _random_wxyz(50, 7), _random_wxyz(50, 8)
    ab = quat_multiply(torch.tensor(a), torch.tensor(b)).numpy()
    ref = (Rotation.from_quat(a[:, [1, 2, 3, 0]]) * Rotation.from_quat(b[:, [1, 2, 3, 0]])).as_matrix()
    np.testing.assert_allclose(quat_to_rotmat(ab), ref, atol=1e-12)

"""recon.color: one sRGB curve for tensors and arrays."""

from __future__ import annotations

import numpy as np
import torch

from recon.color import linear_to_srgb, srgb_to_linear


def test_reference_values_and_round_trip():
    # IEC 61966-2-1 reference points: the linear segment's end, mid grey, white
    s = np.array([0.0, 0.04045, 0.5, 1.0])
    np.testing.assert_allclose(srgb_to_linear(s), [0.0, 0.04045 / 12.92, 0.21404114048223255, 1.0], rtol=1e-12)
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)


def test_numpy_and_torch_paths_agree_and_keep_their_types():
    x = np.linspace(-0.5, 1.5, 257)
    t = torch.tensor(x)
    for fn in (srgb_to_linear, linear_to_srgb):
        a, b = fn(x), fn(t)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor) and b.dtype == torch.float64
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-14, atol=0)
    assert srgb_to_linear(x.astype(np.float32)).dtype == np.float32


def test_clamping_and_hdr():
    x = torch.tensor([-1.0, 0.5, 4.0])
    assert linear_to_srgb(x)[0] == 0 and abs(linear_to_srgb(x)[2] - 1) < 1e-6
    hdr = linear_to_srgb(x, clamp=False)
    assert hdr[0] == 0 and hdr[2] > 1  # HDR values pass through the curve unclamped
    np.testing.assert_allclose(linear_to_srgb(np.array([4.0]), clamp=False), hdr[2:].numpy(), rtol=1e-6)


def test_gradient_is_finite_at_black():
    x = torch.zeros(3, requires_grad=True)
    linear_to_srgb(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.allclose(x.grad, torch.full((3,), 12.92))

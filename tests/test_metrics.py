"""Evaluation metrics against independent references (scikit-image's SSIM, PSNR by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from recon.eval.metrics import gaussian_kernel_1d, psnr, ssim


def _pair(seed: int, h=40, w=56):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w, 3))
    # A related image: blurred, shifted in brightness, with noise, so SSIM is far from 0 and from 1.
    b = np.clip(0.6 * a + 0.4 * np.roll(a, 2, axis=1) + 0.05 + 0.05 * rng.standard_normal(a.shape), 0, 1)
    return a, b


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_scikit_image(seed):
    a, b = _pair(seed)
    # The 3DGS/NeRF convention: 11-tap Gaussian window, sigma 1.5, population covariances, valid windows only;
    # scikit-image pads and averages over every pixel, so compare over the region its padding does not reach.
    _, full = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    ref = full[5:-5, 5:-5].mean()
    ours = float(ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()))
    assert 0.2 < ref < 0.95
    assert abs(ours - ref) < 1e-4, (ours, ref)


def test_ssim_of_identical_images_is_one_and_batched():
    a, b = _pair(2)
    x = torch.from_numpy(np.stack([a, a])).float()
    y = torch.from_numpy(np.stack([a, b])).float()
    s = ssim(x, y)
    assert s.shape == (2,) and abs(float(s[0]) - 1.0) < 1e-5 and float(s[1]) < 0.95


def test_psnr_by_hand_and_masked():
    a, b = _pair(3)
    mse = ((a - b) ** 2).mean()
    assert abs(float(psnr(torch.from_numpy(a), torch.from_numpy(b))) - (-10 * np.log10(mse))) < 1e-6
    mask = np.zeros(a.shape[:2] + (1,))
    mask[:10] = 1.0
    mse_top = ((a[:10] - b[:10]) ** 2).mean()
    got = float(psnr(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(mask)))
    assert abs(got - (-10 * np.log10(mse_top))) < 1e-6


def test_gaussian_kernel_is_normalised_and_symmetric():
    g = gaussian_kernel_1d(11, 1.5, "cpu", torch.float64)
    assert g.shape == (11,) and abs(float(g.sum()) - 1.0) < 1e-12
    assert torch.equal(g, g.flip(0)) and int(g.argmax()) == 5

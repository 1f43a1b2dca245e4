"""The depth-distortion regulariser (``--model.distortion-reg``): alpha * E[z^2] - E[z]^2 per pixel, which for two
Gaussians on a ray is w1 * w2 * (z1 - z2)^2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.cameras import Cameras
from recon.gaussians import GaussianModel
from recon.methods.gs.model import GaussianSplatting, GSConfig

SIZE = 33  # odd, so that the principal point is the centre of the middle pixel


def _model(depths, opacity=0.5, scale=0.3):
    m = GaussianModel(GSConfig(sh_degree=0))  # scene scale 1: depths in scene units
    n = len(depths)
    m.update({
        "means": torch.tensor([[0.0, 0.0, z] for z in depths]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n),
        "scales": torch.full((n, 3), math.log(scale)),
        "opacities": torch.full((n,), math.log(opacity / (1 - opacity))),
        "sh0": torch.zeros(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    })  # fmt: skip
    return m


def _camera():
    return Cameras.create(np.eye(4)[None], 40.0, 40.0, SIZE / 2, SIZE / 2, SIZE, SIZE)


def _centre_value(m, cam):
    one_hot = torch.zeros(SIZE, SIZE)
    one_hot[SIZE // 2, SIZE // 2] = SIZE * SIZE  # the mean over pixels of this weighting is the centre pixel
    return m.depth_distortion(cam, pixel_weights=one_hot).detach()


def test_two_layers_give_w1_w2_squared_gap():
    m, cam = _model([2.0, 3.0]), _camera()
    # At the centre pixel each Gaussian's alpha is its opacity: w1 = 0.5, w2 = 0.5 * (1 - 0.5).
    assert float(_centre_value(m, cam)) == pytest.approx(0.5 * 0.25 * 1.0**2, rel=1e-3)
    # Twice the gap, four times the value.
    assert float(_centre_value(_model([2.0, 4.0]), cam)) == pytest.approx(0.5 * 0.25 * 2.0**2, rel=1e-3)


def test_one_layer_has_no_spread_and_the_gradient_closes_the_gap():
    cam = _camera()
    single = _model([2.5])
    assert float(single.depth_distortion(cam).detach()) < 1e-6
    side_by_side = _model([2.5, 2.5])
    side_by_side["means"].data[1, 0] = 0.05  # overlapping, same depth
    assert float(side_by_side.depth_distortion(cam).detach()) < 1e-6
    m = _model([2.0, 3.0])
    m.depth_distortion(cam).backward()
    g = m["means"].grad[:, 2]
    assert g[0] < 0 < g[1]  # descent moves the front one back and the back one forward


def test_pixel_weights_select_pixels():
    m, cam = _model([2.0, 3.0]), _camera()
    full = float(m.depth_distortion(cam).detach())
    assert full > 0
    assert float(m.depth_distortion(cam, pixel_weights=torch.zeros(SIZE, SIZE)).detach()) == 0.0
    assert float(m.depth_distortion(cam, pixel_weights=torch.ones(SIZE, SIZE)).detach()) == pytest.approx(full)


def test_distortion_starts_at_its_fraction_of_the_run():
    m = GaussianSplatting(GSConfig(distortion_reg=10.0, distortion_from=0.25), None, 100, "cpu")
    assert not m.distortion_on(24) and m.distortion_on(25)
    assert not GaussianSplatting(GSConfig(), None, 100, "cpu").distortion_on(99)  # off by default for gs

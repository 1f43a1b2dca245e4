"""The shared Gaussian model (recon/gaussians/model.py): extra per-Gaussian attributes that travel with densification,
the flat variant, and checkpoint keys that did not change when gs and swift4d started to compose it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.cameras import Cameras
from recon.gaussians import FLAT_SCALE, GaussianConfig, GaussianModel


def _model(n=6, flat=False) -> GaussianModel:
    m = GaussianModel(GaussianConfig(sh_degree=0), flat=flat)
    g = torch.Generator().manual_seed(0)
    m.initialize(torch.rand(n, 3, generator=g) + torch.tensor([0.0, 0.0, 3.0]), torch.rand(n, 3, generator=g))
    return m


def test_extra_attributes_are_created_optimised_and_follow_their_gaussians():
    m = _model()
    m.add_attribute("normals", shape=(3,), lr=1e-3, init=0.5)  # after initialize: created at once
    assert m["normals"].shape == (6, 3) and bool((m["normals"] == 0.5).all())
    m.build_optimizers(scene_scale=2.0, densify_steps=100)
    assert set(m.optimizers) == {"means", "scales", "quats", "opacities", "sh0", "shN", "normals"}
    assert m.optimizers["normals"].param_groups[0]["lr"] == 1e-3
    assert m.optimizers["means"].param_groups[0]["lr"] == pytest.approx(GaussianConfig.means_lr * 2.0)
    with torch.no_grad():
        m["normals"].copy_(torch.arange(6.0)[:, None].repeat(1, 3))  # row i holds i
        m["means"][:, 0] = torch.arange(6.0)
    from gsplat.strategy.ops import duplicate

    duplicate(m, m.optimizers, m.densifier.state, torch.tensor([False, True, False, False, True, False]))
    assert m.num_gaussians == 8 and m["normals"][6:, 0].tolist() == [1.0, 4.0]
    m.remove(torch.tensor([True, False, False, False, False, False, True, False]))
    assert m["normals"][:, 0].tolist() == m["means"][:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 4.0]
    assert m.optimizers["normals"].param_groups[0]["params"][0] is m["normals"]


def test_attributes_declared_before_the_gaussians_exist_and_reserved_names():
    m = GaussianModel(GaussianConfig(sh_degree=0))
    m.add_attribute("albedo", shape=(3,), lr=1e-2)
    with pytest.raises(ValueError):
        m.add_attribute("scales")
    with pytest.raises(ValueError):
        m.add_attribute("rasterize")  # would shadow the model's own method
    m.initialize(torch.zeros(4, 3) + torch.tensor([0.0, 0.0, 3.0]) + torch.rand(4, 3), torch.rand(4, 3))
    assert m["albedo"].shape == (4, 3)
    # A checkpoint written before the attribute existed: it is created when the optimizers are built.
    del m["albedo"]
    m.build_optimizers(1.0, 10)
    assert m["albedo"].shape == (4, 3) and "albedo" in m.optimizers


def _edge_on_and_face_on_alpha(flat: bool) -> tuple[float, float]:
    m = GaussianModel(GaussianConfig(sh_degree=0), flat=flat)
    m.update({
        "means": torch.tensor([[0.0, 0.0, 3.0]]), "scales": torch.full((1, 3), math.log(0.3)),
        "opacities": torch.tensor([4.0]), "sh0": torch.zeros(1, 1, 3), "shN": torch.zeros(1, 0, 3),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
    })  # fmt: skip
    cam = Cameras.create(np.eye(4)[None], 40.0, 40.0, 16.0, 16.0, 32, 32)
    face_on = float(m.render_maps(cam, None)["alpha"].detach().sum())
    with torch.no_grad():  # turn the disc's normal (local z) onto the image x axis
        m["quats"].copy_(torch.tensor([[math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0]]))
    edge_on = float(m.render_maps(cam, None)["alpha"].detach().sum())
    return face_on, edge_on


def test_flat_gaussians_are_discs():
    m = _model(flat=True)
    assert bool((m.activated_scales()[:, 2] == FLAT_SCALE).all())
    assert torch.equal(m.activated_scales()[:, :2], torch.exp(m["scales"][:, :2]))
    face_on, edge_on = _edge_on_and_face_on_alpha(flat=True)
    assert edge_on < 0.2 * face_on  # seen edge-on, a disc is a thin line (the 2D low-pass filter keeps it visible)
    face_round, edge_round = _edge_on_and_face_on_alpha(flat=False)
    assert edge_round == pytest.approx(face_round, rel=1e-3)  # an isotropic 3D Gaussian looks the same


@pytest.mark.parametrize("method", ["gs", "swift4d"])
def test_checkpoint_keys_are_those_of_runs_written_before_the_shared_model(method):
    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.demo import load_demo
    from recon.methods import get_method

    scene = load_demo("dynamic" if method == "swift4d" else "static")
    scene = normalize_scene(scene, compute_normalization(scene))
    cls = get_method(method)
    m = cls(cls.config_cls(init_num_points=200), scene, 100, "cpu")
    m.setup(scene)
    keys = set(m.state_dict())
    expected = {f"splats.{k}" for k in ("means", "scales", "quats", "opacities", "sh0", "shN")} | {"scene_scale"}
    if method == "swift4d":
        expected |= {"splats.d"}
    assert expected <= keys
    assert not any(k.startswith("splats.") for k in keys - expected)
    # A fresh instance (as `recon eval` builds it) takes a checkpoint of another size and renders it.
    fresh = cls(cls.config_cls(init_num_points=200), scene, 100, "cpu")
    state = m.state_dict()
    fresh.resize_for_state_dict(state)
    fresh.load_state_dict(state)
    assert fresh.splats.num_gaussians == m.splats.num_gaussians and set(fresh.optimizers()) == set(m.optimizers())

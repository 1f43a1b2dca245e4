"""The export registry and the declared capabilities it relies on: every method's ``export_kinds`` against the
registry, the class-definition check of ``Capabilities``, and the mesh / mesh-pbr writers on a method with its own
mesh and materials (no method in the registry has materials yet)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import trimesh
from rich.console import Console

from recon.data.normalize import SceneTransform
from recon.errors import ReconError
from recon.export import EXPORT_KINDS, export_run, kinds_for
from recon.methods import available_methods, get_method
from recon.methods.base import Capabilities, Method


def test_every_method_export_kind_is_registered_and_its_needs_are_declared():
    for name in available_methods():
        cls = get_method(name)
        assert cls.export_kinds, name
        for kind in cls.export_kinds:
            assert kind in EXPORT_KINDS, (name, kind)
            for need in EXPORT_KINDS[kind].needs:
                assert cls.supports(need), (name, kind, need)


def test_registered_needs_are_known_capabilities():
    for kind in EXPORT_KINDS.values():
        assert kind.description and kind.needs, kind.name
        for need in kind.needs:
            Method.supports(need)  # raises on an unknown name
    with pytest.raises(ValueError):
        Method.supports("teleport")


def test_capabilities_must_match_overrides():
    with pytest.raises(TypeError, match="does not override mesh"):

        class _Declares(Method):
            capabilities = Capabilities(mesh=True)

    with pytest.raises(TypeError, match="does not declare capabilities.gaussians"):

        class _Overrides(Method):
            def gaussians(self, time=None):
                return {}


class PaintedSphere(Method):
    """A unit sphere (normalised frame) whose materials are red and rough above z = 0, blue and metallic below."""

    name = "painted-sphere"
    export_kinds = ("mesh", "mesh-pbr")
    capabilities = Capabilities(mesh=True, materials=True)

    def __init__(self):
        super().__init__(None, None, 1, torch.device("cpu"))

    def mesh(self, time=None):
        return trimesh.creation.icosphere(subdivisions=2)

    def materials(self):
        def fn(points):
            top = (points[:, 2:3] > 0).float()
            return {
                "base_color": top * torch.tensor([0.8, 0.1, 0.1]) + (1 - top) * torch.tensor([0.1, 0.1, 0.8]),
                "roughness": 0.2 + 0.6 * top,
                "metallic": 1.0 - top,
            }

        return fn


@pytest.fixture
def sphere_run(tmp_path):
    from recon.engine.run import LoadedRun

    # data frame -> normalised: x_n = 0.5 * x_d + (1, 0, 0), so the export's sphere has radius 2 around (-2, 0, 0)
    transform = SceneTransform(np.eye(3), np.array([1.0, 0.0, 0.0]), 0.5)
    return LoadedRun(run_dir=tmp_path, config={}, method=PaintedSphere(), scene=None, transform=transform, trainer_config=None, step=0)


def test_mesh_export_uses_the_methods_mesh_in_the_data_frame(sphere_run):
    path = export_run(sphere_run, "mesh", console=Console(quiet=True))
    assert path == sphere_run.run_dir / "exports" / "mesh.ply"
    mesh = trimesh.load(path, process=False)
    r = np.linalg.norm(mesh.vertices - np.array([-2.0, 0.0, 0.0]), axis=1)
    assert np.allclose(r, 2.0, atol=1e-4) and len(mesh.faces) == len(sphere_run.method.mesh().faces)


def test_pbr_mesh_export_bakes_the_methods_materials(sphere_run):
    path = export_run(sphere_run, "mesh-pbr", console=Console(quiet=True))
    assert path.suffix == ".glb"
    (geom,) = trimesh.load(path, process=False).geometry.values()
    assert np.allclose(np.linalg.norm(geom.vertices - np.array([-2.0, 0.0, 0.0]), axis=1), 2.0, atol=1e-4)
    mat = geom.visual.material
    uv = np.asarray(geom.visual.uv)
    bc = np.asarray(mat.baseColorTexture.convert("RGB")).astype(float)
    mr = np.asarray(mat.metallicRoughnessTexture.convert("RGB")).astype(float)
    # Sample each vertex's texel (trimesh's UV origin is bottom-left): well above/below the equator the material
    # is the method's.
    size = bc.shape[0]
    px = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    py = np.clip(((1 - uv[:, 1]) * size).astype(int), 0, size - 1)
    z = geom.vertices[:, 2]
    top, bottom = z > 0.5, z < -0.5
    assert (bc[py[top], px[top], 0] > 150).all() and (bc[py[bottom], px[bottom], 2] > 150).all()
    assert np.allclose(mr[py[top], px[top], 1], 0.8 * 255, atol=3) and np.allclose(mr[py[top], px[top], 2], 0, atol=3)
    assert np.allclose(mr[py[bottom], px[bottom], 1], 0.2 * 255, atol=3) and np.allclose(mr[py[bottom], px[bottom], 2], 255, atol=3)


def test_kind_not_valid_for_the_run_lists_the_valid_ones(sphere_run):
    assert kinds_for(sphere_run.method) == ("mesh", "mesh-pbr")
    for kind in ("ply", "gltf"):
        with pytest.raises(ReconError, match=f"cannot export '{kind}' \\(kinds for this run: mesh, mesh-pbr\\)"):
            export_run(sphere_run, kind)
    with pytest.raises(ReconError, match="--time/--all-frames need a dynamic method"):
        export_run(sphere_run, "mesh", time=0.5)


def test_mesh_kinds_export_one_time_at_a_time(sphere_run):
    class DynamicPaintedSphere(PaintedSphere):
        is_dynamic = True

    run = dataclasses.replace(sphere_run, method=DynamicPaintedSphere())
    for kind in ("mesh", "mesh-pbr"):
        with pytest.raises(ReconError, match="--all-frames applies to ply and splat"):
            export_run(run, kind, all_frames=True)
    assert export_run(run, "mesh", time=0.5, console=Console(quiet=True)).is_file()


def test_export_help_names_every_registered_kind():
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "recon.cli", "export", "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if "--format" in line)
    for kind in EXPORT_KINDS:
        assert f" {kind} (" in line, kind

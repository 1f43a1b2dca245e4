"""recon.physics: rigid drops on a ground plane of any orientation (MuJoCo), the engine-free interpenetration check,
the primitives-folder reader, and scripts/drop_blocks.py end to end on the demo:solids ground truth.

MuJoCo is a declared dependency: without it the simulation tests fail (ImportError), they do not skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from trimesh.transformations import rotation_matrix

from recon.errors import ReconError
from recon.physics import RigidBody, max_penetration, penetration_per_mesh, simulate_rigid
from recon.physics.primitives import read_primitives

REPO = Path(__file__).resolve().parents[1]


def _box(extents, centre, frame=np.eye(4)):
    """A box with the given extents and centre, expressed in ``frame`` (local z-up -> world)."""
    return trimesh.creation.box(extents=extents).apply_translation(centre).apply_transform(frame)


def _frame(up, origin):
    """A rigid transform taking +z to ``up`` and the origin to ``origin``."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    axis = np.cross([0.0, 0.0, 1.0], up)
    angle = np.arccos(np.clip(up[2], -1, 1))
    T = rotation_matrix(angle, axis) if np.linalg.norm(axis) > 1e-9 else np.eye(4)
    T[:3, 3] = origin
    return T


@pytest.mark.parametrize("up, origin", [([0, 0, 1], [0, 0, 0]), ([0, 1, 0], [0.5, -1.0, 2.0]),
                                        ([0.3, 1.0, -0.4], [1.0, -2.0, 0.5])], ids=["z-up", "y-up", "oblique"])
def test_a_dropped_box_lands_flat_on_the_plane_and_stops(up, origin):
    T = _frame(up, origin)
    up = T[:3, 2]
    box = _box([0.4, 0.3, 0.2], [0.1, -0.2, 0.1 + 0.3], T)  # bottom 0.3 above the plane
    res = simulate_rigid([RigidBody(box)], T[:3, 3], up, seconds=1.5, fps=30)
    assert res.poses.shape == (46, 1, 4, 4) and res.speed.shape == (46, 1) and res.kinetic_energy.shape == (46,)
    assert np.allclose(res.poses[0, 0], np.eye(4))
    final = res.posed_meshes([box])[0]
    heights = (final.vertices - T[:3, 3]) @ up
    assert abs(heights.min()) < 1e-4  # resting on the plane (MuJoCo's soft contact sinks ~1e-5 here)
    assert np.ptp(np.sort(heights)[:4]) < 1e-4  # on a face, not on an edge
    assert res.settled() and res.speed[-1, 0] < 1e-3 and res.kinetic_energy[-1] < 1e-8
    # it fell straight down: no drift along the plane, no turn
    shift = res.poses[-1, 0, :3, 3] + (res.poses[-1, 0, :3, :3] - np.eye(3)) @ box.centroid
    assert np.linalg.norm(shift - (shift @ up) * up) < 1e-4
    assert np.allclose(res.poses[-1, 0, :3, :3], np.eye(3), atol=1e-4)
    assert heights.min() < 0.3 - 1e-3 and res.max_speed.max() > 1.0  # it did fall (v = sqrt(2 g 0.3) = 2.4)


def test_two_stacked_boxes_rest_on_each_other_without_interpenetrating():
    low = _box([0.4, 0.4, 0.4], [0.0, 0.0, 0.25])
    high = _box([0.3, 0.25, 0.2], [0.05, 0.02, 0.75])
    bodies = [RigidBody(low, name="low"), RigidBody(high, density=3.0, name="high")]
    res = simulate_rigid(bodies, [0, 0, 0], [0, 0, 1], seconds=2.0)
    final = res.posed_meshes([low, high])
    assert res.settled()
    assert max_penetration(final, [0, 0, 0], [0, 0, 1]) < 1e-4
    assert abs(final[1].vertices[:, 2].min() - final[0].vertices[:, 2].max()) < 1e-4  # high sits on low
    assert bodies[1].resolved_mass() == pytest.approx(3.0 * 0.3 * 0.25 * 0.2)


def test_simulate_rigid_rejects_bad_input():
    box = _box([0.2, 0.2, 0.2], [0, 0, 0.2])
    with pytest.raises(ValueError, match="ground_normal"):
        simulate_rigid([RigidBody(box)], [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="no volume"):
        simulate_rigid([RigidBody(trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]]))], [0, 0, 0],
                       [0, 0, 1])
    with pytest.raises(ValueError, match="mass"):
        simulate_rigid([RigidBody(box, mass=0.0)], [0, 0, 0], [0, 0, 1])


# ---------------------------------------------------------------------------------------------------- max_penetration
def test_max_penetration_measures_overlap_without_the_engine():
    a = _box([1, 1, 1], [0.5, 0.5, 0.5])
    assert max_penetration([a, _box([1, 1, 1], [1.4, 0.5, 0.5])]) == pytest.approx(0.1, abs=1e-9)  # 0.1 slab
    assert max_penetration([a, _box([1, 1, 1], [1.5, 0.5, 0.5])]) < 1e-12  # face to face
    assert max_penetration([a, _box([1, 1, 1], [1.55, 0.5, 0.5])]) == 0.0  # apart
    # a sphere pushed 0.05 into the box's top face (radius 0.3, centre 0.25 above it): about 0.05 deep
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.3).apply_translation([0.5, 0.5, 1.25])
    assert max_penetration([a, ball], samples=20000) == pytest.approx(0.05, abs=2e-3)
    # the ground, any orientation: a box sunk 0.03 through a tilted plane
    T = _frame([0.2, -0.5, 1.0], [0.3, 0.1, -0.2])
    sunk = _box([0.4, 0.4, 0.4], [0, 0, 0.2 - 0.03], T)
    assert max_penetration([sunk], T[:3, 3], T[:3, 2] * 7.0) == pytest.approx(0.03, abs=1e-9)
    # per mesh: only the meshes that take part
    far = _box([0.2, 0.2, 0.2], [5, 5, 0.1])
    per = penetration_per_mesh([a, _box([1, 1, 1], [1.4, 0.5, 0.5]), far], [0, 0, 0], [0, 0, 1])
    assert per == pytest.approx([0.1, 0.1, 0.0], abs=1e-9)


# ---------------------------------------------------------------------------------------------------- folder + script
def _script(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "drop_blocks.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def solids_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("solids") / "primitives"
    r = _script("--from-demo-solids", out, "--texture-size", 64)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_the_demo_solids_folder_reads_back(solids_folder):
    prim = read_primitives(solids_folder)
    assert len(prim.blocks) == 4 and np.allclose(prim.up, [0, 0, 1]) and np.allclose(prim.ground_normal, [0, 0, 1])
    for b in prim.blocks:
        assert b.collision.is_watertight and b.mesh_path.is_file() and b.mass == pytest.approx(b.collision.volume)
        assert b.collision.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # the ground truth rests on z = 0


def test_drop_blocks_settles_the_demo_solids_and_films_it(solids_folder, tmp_path):
    video = tmp_path / "drop.mp4"
    r = _script(solids_folder, "--seconds", 3, "--tilt", 5, "--size", 64, 48, "--out", video)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "settled: yes" in r.stdout and "within the tolerance" in r.stdout
    for name in ("block_00", "block_01", "block_02", "block_03"):
        assert name in r.stdout
    assert video.stat().st_size > 0
    assert {p.name for p in tmp_path.glob("*.png")} == {"drop_start.png", "drop_fall.png", "drop_end.png"}
    import imageio.v3 as iio

    frames = iio.imread(video)
    assert frames.shape[0] == 91 and frames.shape[1:3] == (48, 64)


def test_drop_blocks_fails_when_blocks_end_interpenetrating(solids_folder, tmp_path):
    # a tolerance nothing can meet turns the check red: exit code 1
    r = _script(solids_folder, "--seconds", 0.5, "--tol", 0.0, "--no-video")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "OVER the tolerance" in r.stdout


def test_bad_primitives_folders_are_one_line_errors_naming_the_file(solids_folder, tmp_path):
    with pytest.raises(ReconError, match="no blocks.json"):
        read_primitives(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(solids_folder, bad)
    (bad / "blocks.json").write_text("{not json")
    with pytest.raises(ReconError, match="not valid JSON") as e:
        read_primitives(bad)
    assert str(bad / "blocks.json") in str(e.value)
    doc = json.loads((solids_folder / "blocks.json").read_text())
    doc["blocks"][1]["collision"] = "physics/missing.obj"
    (bad / "blocks.json").write_text(json.dumps(doc))
    with pytest.raises(ReconError, match="collision mesh of block 'block_01' not found") as e:
        read_primitives(bad)
    assert "missing.obj" in str(e.value)
    doc["version"] = 2
    (bad / "blocks.json").write_text(json.dumps(doc))
    r = _script(bad, "--no-video")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and "unsupported version 2" in r.stderr and r.stderr.count("\n") == 1

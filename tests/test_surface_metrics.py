"""recon.eval.surface against references it does not share code with: analytic shapes (concentric spheres, parallel
planes, a cylinder's rim), open3d's point-cloud distance, and meshes whose topology is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from recon.demo.shapes import open_cylinder
from recon.eval.surface import fscore, nearest_pairs, sample_surface, surface_metrics, topology

N = 20_000  # samples per mesh: enough for 1 % agreement below, small enough for a fast test


def square(z: float = 0.0) -> trimesh.Trimesh:
    """The unit square [0, 1]^2 at height z, normal +z."""
    v = np.array([[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]], dtype=np.float64)
    return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)


def sphere(radius: float, subdivisions: int = 4) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)


def test_samples_are_uniform_over_area_on_the_faces_with_their_normals():
    # Two faces of area 1/2 and 3/2 (plus a zero-area one, never drawn): a quarter and three quarters of the samples.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 1, 1], [5, 5, 5]], dtype=np.float64)
    mesh = trimesh.Trimesh(v, [[0, 1, 2], [3, 4, 5], [6, 6, 6]], process=False)
    points, normals = sample_surface(mesh, N, seed=1)
    assert points.shape == normals.shape == (N, 3)
    low = points[:, 2] == 0
    assert abs(low.mean() - 0.25) < 0.02 and np.all(points[~low, 2] == 1)
    assert np.all(points[:, :2] >= 0) and np.all(points[low, 0] + points[low, 1] <= 1 + 1e-12)
    assert np.allclose(normals, [0, 0, 1])
    # Uniform inside a face: the share in the corner triangle x + y < 1/2 of the low face is its area share, 1/4.
    assert abs((points[low, 0] + points[low, 1] < 0.5).mean() - 0.25) < 0.03
    again, _ = sample_surface(mesh, N, seed=1)
    assert np.array_equal(points, again)
    with pytest.raises(ValueError, match="no area"):
        sample_surface(trimesh.Trimesh(v[:3], [[0, 0, 1]], process=False), 10)


def test_concentric_spheres_are_their_radius_difference_apart():
    r, d = 1.0, 0.2
    m = surface_metrics(sphere(r), sphere(r + d), n_points=N)
    # The nearest sample also sits sideways, s with E[s^2] = area / (pi N) for N uniform samples, which adds about
    # E[s^2] / (2 d) = 0.5 % to d here (and the facets shrink both spheres alike, by 0.1 %).
    for key in ("accuracy", "completeness", "chamfer"):
        assert m[key] == pytest.approx(d, rel=0.01), key
    assert m["normal_consistency"] > 0.999 and m["normal_consistency_signed"] > 0.999
    # An inverted winding flips the signed figure only.
    inside_out = sphere(r + d)
    inside_out.invert()
    m = surface_metrics(sphere(r), inside_out, n_points=N)
    assert m["normal_consistency"] > 0.999 and m["normal_consistency_signed"] < -0.999


@pytest.mark.parametrize("d", [0.05, 0.1])  # sideways bias (see above): 0.3 % and 0.1 %
def test_a_square_shifted_along_its_normal(d):
    m = surface_metrics(square(), square(d), n_points=N, fscore_threshold=2 * d)
    assert m["accuracy"] == pytest.approx(d, rel=0.01) and m["completeness"] == pytest.approx(d, rel=0.01)
    assert m["chamfer"] == pytest.approx(d, rel=0.01)
    assert m["normal_consistency"] == pytest.approx(1.0) and m["normal_consistency_signed"] == pytest.approx(1.0)
    assert m["precision"] == m["recall"] == m["fscore"] == 1.0  # every distance is below 2 d
    assert m["boundary_length_ratio"] == pytest.approx(1.0)
    assert m["pred"]["boundary_loops"] == m["gt"]["boundary_loops"] == 1
    json.dumps(m)  # plain values only
    # Below d nothing matches: every distance is at least d.
    low = surface_metrics(square(), square(d), n_points=N, fscore_threshold=0.9 * d)
    assert low["precision"] == low["recall"] == low["fscore"] == 0.0


def test_fscore_of_partial_matches():
    # Half the pred samples match (precision 1/2), every GT sample does (recall 1): F = 2/3.
    gt = np.array([[0.0, 0, 0], [1, 0, 0]])
    pred = np.array([[0.0, 0, 0.001], [1, 0, 0.001], [5, 0, 0], [6, 0, 0]])
    f = fscore(nearest_pairs(pred, gt), threshold=0.01)
    assert f["precision"] == 0.5 and f["recall"] == 1.0 and f["fscore"] == pytest.approx(2 / 3)


def test_nearest_distances_match_open3d():
    o3d = pytest.importorskip("open3d")
    pred_points, _ = sample_surface(trimesh.creation.torus(1.0, 0.3), 5000, seed=2)
    gt_points, _ = sample_surface(trimesh.creation.box((1.5, 2.0, 0.8)), 6000, seed=3)
    pairs = nearest_pairs(pred_points, gt_points)

    def cloud(p):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))

    ref_pg = np.asarray(cloud(pred_points).compute_point_cloud_distance(cloud(gt_points)))
    ref_gp = np.asarray(cloud(gt_points).compute_point_cloud_distance(cloud(pred_points)))
    assert np.allclose(pairs.pred_to_gt, ref_pg, atol=1e-9) and np.allclose(pairs.gt_to_pred, ref_gp, atol=1e-9)
    assert np.allclose(np.linalg.norm(pred_points - gt_points[pairs.pred_match], axis=1), ref_pg, atol=1e-9)


def test_open_cylinder_has_two_boundary_loops_of_its_rims_length():
    sections = 64
    v, f = open_cylinder(radius=1.0, height=2.0, sections=sections, rings=4)
    t = topology(trimesh.Trimesh(v, f, process=False))
    assert t["boundary_loops"] == 2 and t["components"] == 1 and not t["watertight"] and t["non_manifold_edges"] == 0
    # Two regular 64-gons of circumradius 1.
    assert t["boundary_length"] == pytest.approx(2 * sections * 2 * np.sin(np.pi / sections))


def test_hemisphere_has_one_boundary_loop_and_a_closed_sphere_none():
    closed = sphere(1.0, subdivisions=3)
    t = topology(closed)
    assert t["watertight"] and t["boundary_loops"] == 0 and t["boundary_length"] == 0.0 and t["components"] == 1
    hemisphere = closed.copy()
    hemisphere.update_faces(closed.triangles_center[:, 2] > 0)
    t = topology(hemisphere)
    assert t["boundary_loops"] == 1 and not t["watertight"] and t["non_manifold_edges"] == 0


def test_a_triangle_soup_is_welded_before_topology():
    closed = sphere(1.0, subdivisions=2)
    soup = trimesh.Trimesh(closed.triangles.reshape(-1, 3), np.arange(3 * len(closed.faces)).reshape(-1, 3), process=False)
    assert topology(soup) == topology(closed)


def test_three_faces_on_one_edge_are_one_non_manifold_edge():
    v = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1]], dtype=np.float64)
    t = topology(trimesh.Trimesh(v, [[0, 1, 2], [1, 0, 3], [0, 1, 4]], process=False))
    assert t["non_manifold_edges"] == 1 and not t["watertight"] and t["components"] == 1 and t["faces"] == 3


def test_small_components_are_left_out_of_the_boundary_figures():
    # A closed sphere (320 faces) and a far-away open square (2 faces, 0.6 % of all).
    mesh = trimesh.util.concatenate([sphere(1.0, subdivisions=2), square(5.0)])
    t = topology(mesh)  # default: components under 1 % of the faces are left out
    assert t["components"] == 2 and t["small_components"] == 1 and t["boundary_loops"] == 0 and t["boundary_length"] == 0
    assert not t["watertight"]  # judged on the whole mesh
    t = topology(mesh, min_component_fraction=0.0)
    assert t["small_components"] == 0 and t["boundary_loops"] == 1 and t["boundary_length"] == pytest.approx(4.0)


def test_settings_out_of_range_are_refused():
    with pytest.raises(ValueError, match="fscore_threshold"):
        surface_metrics(square(), square(0.1), n_points=10, fscore_threshold=0.0)

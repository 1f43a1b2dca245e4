"""Built-in demo scenes (recon.demo): registry, determinism, sizes, render conventions, dynamic-scene truth, cache."""

from __future__ import annotations

import time

import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.ndimage import maximum_filter, minimum_filter

from recon.demo import DEMO_SCENES, load_demo
from recon.demo import dynamic, open_surface, solids, static
from recon.demo.shapes import boundary_edges
from recon.errors import ReconError

SCENES = ["static", "dynamic", "open_surface", "solids"]
SMALL = {  # reduced settings for tests that generate twice
    "static": (static, dict(resolution=32, n_views=4, n_points=300)),
    "open_surface": (open_surface, dict(resolution=32, n_views=4, n_points=300)),
    "solids": (solids, dict(resolution=32, n_views=4, n_points=300)),
    "dynamic": (dynamic, dict(resolution=24, n_cameras=3, n_frames=4, n_points=300)),
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("recon-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECON_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def scenes(cache_dir):
    """Every full-size scene, generated once into a temporary cache (with generation times)."""
    out = {}
    for name in SCENES:
        t0 = time.perf_counter()
        out[name] = load_demo(name)
        out[name].ground_truth["_seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------------- registry
def test_registry_and_method_defaults():
    from recon.methods import available_methods, get_method

    assert set(SCENES) <= set(DEMO_SCENES) and "pbr" in DEMO_SCENES
    assert all(isinstance(d, str) and d for d in DEMO_SCENES.values())
    # Every method's default demo is a real scene (the method contract test trains on it).
    for name in available_methods():
        assert get_method(name).default_demo in DEMO_SCENES, name
    assert get_method("gs").default_demo == "static" and get_method("swift4d").default_demo == "dynamic"


def test_unknown_name_lists_choices():
    with pytest.raises(ReconError) as err:
        load_demo("teapot")
    assert all(name in str(err.value) for name in DEMO_SCENES)


def test_pbr_wrapper():
    from recon.demo import pbr_demo

    if not pbr_demo.available():
        with pytest.raises(ReconError, match="not available"):
            load_demo("pbr", cache=False)
    # The adapter's contract, independent of the PBR scene itself.
    n = 9
    raw = {
        "images": np.random.default_rng(0).random((n, 8, 10, 3)).astype(np.float32),
        "camtoworlds": np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        "K": np.array([[10.0, 0, 5], [0, 10, 4], [0, 0, 1]]),
        "albedo": np.zeros((n, 8, 10, 3), np.float32),
        "env": {"map": np.zeros((4, 8, 3))},
    }
    from recon.demo.common import bundle_to_scene

    scene = bundle_to_scene("pbr", pbr_demo.adapt(raw), "/tmp")
    assert len(scene) == n and scene.image(1).shape == (8, 10, 3)
    assert list(scene.splits["test"]) == [0, 8]
    assert scene.ground_truth["albedo"].shape == (n, 8, 10, 3) and "map" in scene.ground_truth["env"]
    assert float(scene.cameras.cx[0]) == 5.0


def test_pbr_wrapper_cameras_match_images():
    """The adapter's pose conversion (viewmats -> camtoworlds) against the PBR scene's own renders."""
    from recon.demo import pbr_demo
    from recon.demo.common import bundle_to_scene

    if not pbr_demo.available():
        pytest.skip("datasets/pbr_scene.py not present")
    from recon.demo.pbr_scene import make_pbr_scene

    raw = make_pbr_scene(n_views=3, resolution=32, n_relit=1, subdivisions=2)
    s = bundle_to_scene("pbr", pbr_demo.adapt(raw), "/tmp")
    pbr_demo.finish(s)
    assert callable(s.ground_truth["material_fn"]) and s.points.shape == (6000, 3)
    uv, z = s.cameras.project(torch.from_numpy(_surface_points(s.ground_truth["mesh"], 1000)).float())
    for i in range(len(s)):
        px = np.floor(uv[i].numpy()).astype(int)
        ok = (z[i].numpy() > 0) & (px >= 0).all(1) & (px < 32).all(1)
        grown = maximum_filter(s.image(i)[..., 3], size=3)
        assert ok.mean() > 0.5 and (grown[px[ok, 1], px[ok, 0]] > 0).mean() > 0.99


# ---------------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("name", SCENES)
def test_deterministic(name):
    module, kwargs = SMALL[name]
    a, b = module.generate(**kwargs), module.generate(**kwargs)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_dynamic_incremental_matches_full_render():
    kwargs = SMALL["dynamic"][1]
    fast, full = dynamic.generate(**kwargs), dynamic.generate(**kwargs, incremental=False)
    for key in fast:
        assert np.array_equal(fast[key], full[key]), key


@pytest.mark.parametrize("name", SCENES)
def test_sizes_and_counts(scenes, name):
    s = scenes[name]
    assert s.format == f"demo:{name}" and s.name == f"demo-{name}"
    h, w = int(s.cameras.heights[0]), int(s.cameras.widths[0])
    assert 64 <= h <= 128 and 64 <= w <= 128
    assert s.points.shape[1] == 3 and s.point_colors.shape == s.points.shape and len(s.points) >= 1000
    assert s.point_colors.min() >= 0 and s.point_colors.max() <= 1
    assert s.aabb.shape == (2, 3) and (s.aabb[0] < s.aabb[1]).all()
    inside = ((s.points >= s.aabb[0] - 1e-5) & (s.points <= s.aabb[1] + 1e-5)).all(1)
    assert inside.all()
    gt = s.ground_truth
    assert gt["depth"].shape == (len(s), h, w) and gt["normal"].shape == (len(s), h, w, 3)
    if name == "dynamic":
        assert len(s) == 16 * 24 and s.image(0).shape == (h, w, 3) and s.is_dynamic
        assert set(np.unique(s.camera_ids)) == set(range(16)) and set(np.unique(s.frame_ids)) == set(range(24))
        np.testing.assert_allclose(s.cameras.times.numpy(), s.frame_ids / 23.0, atol=1e-6)
        assert (s.camera_ids[s.splits["test"]] == 0).all() and (s.camera_ids[s.splits["train"]] != 0).all()
        assert (s.cameras.camtoworlds[s.camera_ids == 3] == s.cameras.camtoworlds[3 * 24]).all()  # fixed cameras
    else:
        assert 40 <= len(s) <= 60 and s.image(0).shape == (h, w, 4) and not s.is_dynamic
        assert list(s.splits["test"]) == list(range(0, len(s), 8))
        assert len(s.splits["train"]) + len(s.splits["test"]) == len(s)


@pytest.mark.parametrize("name", SCENES)
def test_images_not_trivial(scenes, name):
    s = scenes[name]
    for i in range(0, len(s), max(1, len(s) // 6)):
        img = s.image(i)
        rgb = s.image_rgb(i)
        assert rgb.std() > 0.05, i
        # fine texture: many distinct colours, strong local gradients
        assert len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 500
        if img.shape[-1] == 4:
            cover = (img[..., 3] > 0.5).mean()
            assert 0.08 < cover < 0.9, (i, cover)


def _surface_points(mesh, n=3000, seed=0):
    pts, _ = __import__("trimesh").sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts)


@pytest.mark.parametrize("name", ["static", "open_surface", "solids"])
def test_surface_points_project_into_alpha(scenes, name):
    """Camera/render convention check: every ground-truth surface point inside a view lands on a covered pixel."""
    s = scenes[name]
    pts = _surface_points(s.ground_truth["mesh"])
    uv, z = s.cameras.project(torch.from_numpy(pts).float())
    uv, z = uv.numpy(), z.numpy()
    h, w = int(s.cameras.heights[0]), int(s.cameras.widths[0])
    for i in range(0, len(s), 5):
        ok = (z[i] > 0) & (uv[i, :, 0] >= 0) & (uv[i, :, 0] < w) & (uv[i, :, 1] >= 0) & (uv[i, :, 1] < h)
        px = np.floor(uv[i, ok]).astype(int)
        alpha = s.image(i)[..., 3]
        # Points at silhouettes (edge-on sheets, thin rings) may fall between the 2x2 samples of their pixel.
        assert (alpha[px[:, 1], px[:, 0]] > 0).mean() > 0.98
        grown = maximum_filter(alpha, size=3)
        assert (grown[px[:, 1], px[:, 0]] > 0).mean() > 0.999, (i, (grown[px[:, 1], px[:, 0]] > 0).mean())
        # Visible points (in front within a small tolerance of the depth map) agree with the depth map.
        # Nothing is seen behind a surface point: some pixel centre next to it is at most as deep (silhouette
        # points can fall between pixel centres); and a good share of the points are the surface seen.
        dmap = s.ground_truth["depth"][i]
        nearest = minimum_filter(np.where(dmap > 0, dmap, np.inf), size=3)[px[:, 1], px[:, 0]]
        front = nearest <= z[i, ok] + 0.1  # grazing pleats change depth fast within a pixel
        assert front.mean() > 0.99, (i, front.mean())
        assert (np.abs(dmap[px[:, 1], px[:, 0]] - z[i, ok]) < 0.02).mean() > 0.15


@pytest.mark.parametrize("name", SCENES)
def test_depth_backprojects_onto_mesh(scenes, name):
    """Depth maps are camera-z at pixel centres: back-projected with recon's rays they lie on the GT geometry."""
    s = scenes[name]
    gt = s.ground_truth
    if name == "dynamic":
        import trimesh

        t = 5
        objs = gt["objects"]
        meshes = [gt["static_mesh"], objs["ball"]["mesh"].copy().apply_transform(objs["ball"]["transforms"][t]),
                  objs["cube"]["mesh"].copy().apply_transform(objs["cube"]["transforms"][t]),
                  trimesh.Trimesh(objs["flag"]["vertices"][t], objs["flag"]["mesh"].faces, process=False)]
        views = [c * 24 + t for c in range(0, 8, 3)]
    else:
        meshes, views = [gt["mesh"]], range(0, len(s), 7)
    rs = o3d.t.geometry.RaycastingScene()
    for m in meshes:
        rs.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, np.float32)),
                         o3d.core.Tensor(np.asarray(m.faces, np.uint32)))
    for i in views:
        hit = gt["depth"][i] > 0
        origins, dirs = s.cameras.rays(i)
        fwd = s.cameras.camtoworlds[i, :3, 2]
        t_ray = torch.from_numpy(gt["depth"][i]) / (dirs @ fwd)
        pts = (origins + dirs * t_ray[..., None])[torch.from_numpy(hit)].numpy()
        dist = rs.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
        assert np.quantile(dist, 0.99) < 2e-3, (i, np.quantile(dist, 0.99))
        n = gt["normal"][i][hit]
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-3)
        # Normals face the camera (interpolated shading normals may tilt away at grazing angles).
        assert (np.sum(n * dirs[torch.from_numpy(hit)].numpy(), axis=1) < 0).mean() > 0.97


# ---------------------------------------------------------------------------------------------------- scene truth
def test_dynamic_static_pixels_constant_dynamic_pixels_change(scenes):
    s = scenes["dynamic"]
    T = 24
    mask = s.ground_truth["dynamic_mask"]
    for cam in (0, 5):
        idx = np.flatnonzero(s.camera_ids == cam)
        assert list(s.frame_ids[idx]) == list(range(T))
        imgs = np.stack([s.image(i) for i in idx])
        dyn = mask[idx]
        static_px = ~dyn.any(0)
        assert 0.5 < static_px.mean() < 0.97
        assert (imgs[:, static_px] == imgs[0, static_px]).all()  # byte-identical over time
        changed = (np.abs(imgs - imgs[:1]).max(-1) > 0.02)  # [T, H, W] vs frame 0
        assert changed[:, dyn.any(0)].mean() > 0.3
        assert (dyn.mean(axis=(1, 2)) > 0.01).all()  # something moves in view in every frame


def test_dynamic_motion_truth_matches_images(scenes):
    """The ball's ground-truth centre projects onto pixels whose part map says 'ball', in every frame."""
    s = scenes["dynamic"]
    gt = s.ground_truth
    ball = list(gt["part_names"]).index("ball")
    centres = gt["objects"]["ball"]["transforms"][:, :3, 3]
    assert gt["objects"]["ball"]["transforms"].shape == (24, 4, 4)
    assert gt["objects"]["flag"]["vertices"].shape[0] == 24
    assert np.linalg.norm(centres[-1] - centres[0]) > 1.0  # it really travels
    cam = 0
    idx = np.flatnonzero(s.camera_ids == cam)
    uv, _ = s.cameras[int(idx[0])].project(torch.from_numpy(centres).float())
    px = np.floor(uv[0].numpy()).astype(int)
    parts = gt["part"][idx, px[:, 1], px[:, 0]]
    assert (parts == ball).mean() > 0.9


def test_open_surface_boundary(scenes):
    gt = scenes["open_surface"].ground_truth
    mesh = gt["mesh"]
    assert not mesh.is_watertight
    be = gt["boundary_edges"]
    assert len(be) > 100 and np.array_equal(be, boundary_edges(np.asarray(mesh.faces)))
    # The boundary is two closed loops (waist and hem): every boundary vertex has degree 2, two components.
    deg = np.bincount(be.ravel())
    assert set(deg[deg > 0]) == {2}
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    verts = np.unique(be)
    remap = {v: i for i, v in enumerate(verts)}
    a = sp.coo_matrix((np.ones(len(be)), ([remap[v] for v in be[:, 0]], [remap[v] for v in be[:, 1]])),
                      shape=(len(verts), len(verts)))
    assert connected_components(a, directed=False)[0] == int(gt["n_boundary_loops"]) == 2
    assert gt["backface"].mean() > 0.01  # the inside is seen


def test_solids_primitives(scenes):
    gt = scenes["solids"].ground_truth
    prim = gt["primitives"]
    assert list(prim["types"]) == ["cube", "sphere", "cylinder", "superquadric"]
    assert prim["poses"].shape == (4, 4, 4) and prim["sizes"].shape == (4, 3) and prim["exponents"].shape == (4, 2)
    # Sizes agree with the meshes: volumes of the analytic shapes, within tessellation error.
    pieces = gt["objects_mesh"].split(only_watertight=True)
    assert len(pieces) == 4
    vols = [p.volume for p in pieces]
    h = prim["sizes"]
    expected = [8 * h[0].prod(), 4 / 3 * np.pi * h[1, 0] ** 3, np.pi * h[2, 0] ** 2 * 2 * h[2, 2]]
    for e in expected:
        assert min(abs(v - e) / e for v in vols) < 0.03
    # Each primitive's centre projects onto the object mask in most views (poses agree with the images).
    s = scenes["solids"]
    uv, _ = s.cameras.project(torch.from_numpy(prim["poses"][:, :3, 3]).float())
    px = np.floor(uv.numpy()).astype(int)
    on = [gt["object_mask"][i, px[i, :, 1].clip(0, 127), px[i, :, 0].clip(0, 127)].mean() for i in range(len(s))]
    assert np.mean(on) > 0.8


# ---------------------------------------------------------------------------------------------------- cache
def test_cache_hit_is_identical_and_fast(scenes, cache_dir):
    s1 = scenes["static"]
    assert s1.root.parent == cache_dir / "demo" and (s1.root / "scene.npz").is_file()
    t0 = time.perf_counter()
    s2 = load_demo("static")
    assert time.perf_counter() - t0 < 2.0
    for i in (0, 7):
        assert np.array_equal(s1.image(i), s2.image(i))
    assert torch.equal(s1.cameras.camtoworlds, s2.cameras.camtoworlds)
    assert np.array_equal(s1.points, s2.points) and np.array_equal(s1.ground_truth["depth"], s2.ground_truth["depth"])
    assert np.array_equal(s1.ground_truth["mesh"].faces, s2.ground_truth["mesh"].faces)


def test_cache_regenerates_corrupt_file_and_respects_cache_false(tmp_path, monkeypatch):
    monkeypatch.setenv("RECON_CACHE", str(tmp_path))
    calls = []
    small = static.generate(**SMALL["static"][1])

    def fake_generate():
        calls.append(1)
        return small

    monkeypatch.setattr(static, "generate", fake_generate)
    a = load_demo("demo:static")
    assert len(calls) == 1
    b = load_demo("static")
    assert len(calls) == 1 and np.array_equal(a.image(1), b.image(1))
    files = list((tmp_path / "demo").glob("static-*/scene.npz"))
    assert len(files) == 1 and not list(files[0].parent.glob("*.tmp"))  # atomic write left nothing behind
    files[0].write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable demo cache"):
        c = load_demo("static")
    assert len(calls) == 2 and np.array_equal(a.image(1), c.image(1))
    load_demo("static", cache=False)
    assert len(calls) == 3


def test_generation_time_budget(scenes):
    """Each scene generates in seconds on a small CPU (generous bound: the test machine is shared)."""
    for name, s in scenes.items():
        assert s.ground_truth["_seconds"] < 60, (name, s.ground_truth["_seconds"])

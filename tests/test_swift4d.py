"""Swift4D: change masks, the monocular substitute, the max-weight pass, the static/dynamic split on the dynamic
demo, deformation of dynamic Gaussians only, all-dynamic mode, exports, checkpoint round trip, CLI end to end.

One short CLI run on demo:dynamic (module fixture) feeds the tests that need a trained model.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.methods.swift4d import masks as mk

RECON = [sys.executable, "-m", "recon.cli"]


# ------------------------------------------------------------------------------------------------ masks
def _moving_square_video(T=8, H=32, W=48, size=6):
    """A white square moving left to right along row band [12, 18) over a grey, textured-but-static background."""
    rng = np.random.default_rng(0)
    bg = 0.3 + 0.2 * rng.random((H, W, 3))
    frames, xs = [], []
    for t in range(T):
        f = bg.copy()
        x = 4 + t * 4
        f[12 : 12 + size, x : x + size] = 1.0
        frames.append(f.astype(np.float32))
        xs.append(x)
    return frames, xs, size


def test_deformation_field_is_the_references_grid_and_heads():
    """§1.3: 16 levels x 4 features, base 16, scale 2, 2^15 rows; five zero-initialised heads (geometry only: three)."""
    from recon.methods.swift4d.field import DeformationField

    field = DeformationField(sh_coeffs=16)
    lay = field.encoding.layout
    assert lay.n_dims == 4 and lay.n_levels == 16 and lay.n_features == 4 and lay.log2_hashmap_size == 15
    assert lay.resolutions[0] == (16,) * 4 and lay.resolutions[1] == (32,) * 4
    assert field.encoding.n_output_dims == 64
    assert not any(lay.dense)  # 17^4 > 2^15: every level is hashed
    out = field(torch.rand(10, 4))
    assert {k: v.shape[-1] for k, v in out.items()} == {"xyz": 3, "scale": 3, "rotation": 4, "opacity": 1, "sh": 48}
    assert all((v == 0).all() for v in out.values())
    assert set(DeformationField(16, appearance=False)(torch.rand(2, 4))) == {"xyz", "scale", "rotation"}
    capped = DeformationField(16, log2_hashmap_size=12, time_resolution=5).encoding.layout
    assert max(r[3] for r in capped.resolutions) == 5 and capped.log2_hashmap_size == 12


def test_temporal_std_mask_on_moving_square():
    frames, xs, size = _moving_square_video()
    m = mk.temporal_std_mask(frames, threshold=0.02, ksize=mk.blur_kernel_size(48, 31, 1352))
    assert m.shape == (32, 48) and m.dtype == torch.bool
    path = np.zeros((32, 48), bool)
    for x in xs:
        path[12 : 12 + size, x : x + size] = True
    assert m[torch.from_numpy(path)].all()  # everywhere the square passes
    far = np.ones((32, 48), bool)
    far[8:22, :] = False  # rows well away from the square's band (blur radius 1 px at this width)
    assert not m[torch.from_numpy(far)].any()
    # The std is the population std over time, averaged over RGB.
    std = mk.temporal_std(frames)
    assert torch.allclose(std, torch.from_numpy(np.stack(frames).std(0).mean(-1)).float(), atol=1e-5)


def test_blur_kernel_scales_with_width():
    assert mk.blur_kernel_size(1352) == 31
    assert mk.blur_kernel_size(200) == 5 and mk.blur_kernel_size(96) == 3
    assert mk.blur_kernel_size(2704) == 63
    img = torch.zeros(21, 21)
    img[10, 10] = 1.0
    b = mk.gaussian_blur(img, 5)
    assert abs(float(b.sum()) - 1.0) < 1e-5 and b[10, 10] == b.max()


def test_monocular_residual_substitute():
    """A static fit converges to the temporal average; its residual marks exactly where the scene moves."""
    frames, xs, size = _moving_square_video()
    video = torch.from_numpy(np.stack(frames))
    static_fit = video.mean(0, keepdim=True).expand_as(video)  # what a static model fitted to all frames renders
    m = mk.residual_masks(static_fit, video, threshold=0.06, ksize=3)
    assert m.shape == (8, 32, 48)
    for t, x in enumerate(xs):
        assert m[t, 12 : 12 + size, x : x + size].all()  # the square where it is now
        assert not m[t, :8].any() and not m[t, 22:].any()  # static rows


def test_monocular_pools_use_all_frames(shared_data):
    """D-NeRF (one camera per time): the canonical and d-score stages use every training frame."""
    from recon.data import load_scene
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_scene(shared_data / "dnerf_lego")
    m = Swift4D(Swift4DConfig(), scene, 1000, "cpu")
    assert not m.multiview and sorted(m.canonical_pool) == sorted(int(i) for i in scene.split("train"))
    lo, hi = m.time_range.tolist()
    assert 0.15 < lo < 0.17 and 0.94 < hi < 0.96  # train times only (val spans 0..1)
    # One time cell of the field per mono_views_per_time_cell training views (34 frames / 4), so that every cell is
    # supervised from several directions; an explicit --model.time-resolution wins.
    assert m.time_cells() == 8 and m.field.encoding.layout.resolutions[-1][3] == 8
    assert Swift4D(Swift4DConfig(time_resolution=5), scene, 1000, "cpu").time_cells() == 5
    # The masked depth-distortion term is on for monocular data by default (off with --model.distortion off).
    assert m.use_distortion and m.distortion_on(m.stages.dscore_end)
    assert not Swift4D(Swift4DConfig(distortion="off"), scene, 1000, "cpu").distortion_on(999)
    # Monocular data splits at its own ζ (mono_dynamic_threshold), not the paper's multi-view one.
    assert m.zeta == Swift4DConfig.mono_dynamic_threshold != Swift4DConfig.dynamic_threshold


# ------------------------------------------------------------------------------------------------ max weights
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_gaussian_max_weights_matches_brute_force(backend):
    from recon.render.gaussian_weights import gaussian_max_weights
    from recon.render.gaussians import project_gaussians

    g = torch.Generator().manual_seed(0)
    N, W, H = 40, 24, 18
    means = torch.randn(N, 3, generator=g) * 0.4 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(N, 4, generator=g)
    scales = torch.rand(N, 3, generator=g) * 0.2 + 0.02
    opac = torch.rand(N, generator=g) * 0.9 + 0.05
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]])
    if backend == "torch":
        got = gaussian_max_weights(means, quats, scales, opac, viewmats, Ks, W, H, backend="torch", max_pairs=200)  # forces bands
    else:
        got = gaussian_max_weights(means, quats, scales, opac, viewmats, Ks, W, H, backend="cpu")  # C++ kernel

    radii, m2d, depth, conic, o, _ = project_gaussians(means, quats, scales, opac, viewmats, Ks, W, H)
    vis = (radii[0] > 0).all(-1)
    order = [i for i in torch.argsort(depth[0], stable=True).tolist() if vis[i]]
    want = torch.zeros(N, dtype=torch.float64)
    for py in range(H):
        for px in range(W):
            T = 1.0
            for i in order:
                dx, dy = float(m2d[0, i, 0]) - (px + 0.5), float(m2d[0, i, 1]) - (py + 0.5)
                a, b, c = conic[0, i].tolist()
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(o[0, i]) * np.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                want[i] = max(want[i], alpha * T)
                T *= 1 - alpha
    assert torch.allclose(got.double(), want, atol=1e-5), (got - want).abs().max()
    assert (want > 0).sum() > 10


def test_gaussian_max_weights_kernel_matches_torch_multi_camera():
    """The C++ kernel path against the torch reference: several cameras (max over images), many overlapping
    Gaussians (early termination), some behind the camera and off-screen."""
    from recon.cameras import look_at
    from recon.render.gaussian_weights import gaussian_max_weights

    g = torch.Generator().manual_seed(3)
    N, W, H = 3000, 61, 47
    means = torch.randn(N, 3, generator=g) * 0.7
    quats = torch.randn(N, 4, generator=g)
    scales = torch.rand(N, 3, generator=g) * 0.08 + 0.01
    opac = torch.rand(N, generator=g) * 0.95 + 0.02
    eyes = [[0.0, -3.0, 0.5], [2.5, 1.0, 0.3], [-0.2, 0.4, 0.6]]  # the last one sits inside the cloud
    c2w = np.stack([look_at(np.array(e), np.zeros(3)) for e in eyes])
    viewmats = torch.from_numpy(np.linalg.inv(c2w)).float()
    Ks = torch.tensor([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]]).expand(3, 3, 3).contiguous()
    got = gaussian_max_weights(means, quats, scales, opac, viewmats, Ks, W, H)
    want = gaussian_max_weights(means, quats, scales, opac, viewmats, Ks, W, H, backend="torch")
    assert (want > 0.02).sum() > 300 and (want == 0).sum() > 10  # both important and never-drawn Gaussians
    assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()


# ------------------------------------------------------------------------------------------------ trained run
def test_error_analysis_background_share_on_rgba_data():
    """The share of the squared error on pixels the ground truth leaves empty (RGBA data), on a hand-made case:
    the render is off by 0.5 on the 10 empty rows and by 0.1 on the 10 object rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ea", Path(__file__).resolve().parents[1] / "scripts" / "swift4d_error_analysis.py")
    ea = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ea)
    rgba = np.zeros((20, 8, 4), np.float32)
    rgba[10:] = (0.2, 0.4, 0.6, 1.0)  # object in the lower half, nothing in the upper half

    class Cams:
        times = torch.zeros(1)
        camtoworlds = torch.eye(4)[None]

        def to(self, device):
            return self

        def __getitem__(self, i):
            return self

    class Scene:
        background, cameras = (1.0, 1.0, 1.0), Cams()

        def split(self, name):
            return np.array([0])

        def image(self, i):
            return rgba

        def mask(self, i):  # SceneData.mask: the alpha channel of RGBA data
            return rgba[..., 3:]

        def image_rgb(self, i):
            return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])

    class Method:
        device_ = torch.device("cpu")

        def render(self, camera, time, outputs, background):
            rgb = torch.from_numpy(Scene().image_rgb(0)).clone()
            rgb[:10] -= 0.5
            rgb[10:] += 0.1
            return {"rgb": rgb, "dynamic_mask": torch.zeros(20, 8, 1)}

    r = ea.region_errors(Method(), Scene(), "test")
    assert r["background_error_share"] == pytest.approx(0.25 / (0.25 + 0.01), rel=1e-5)
    assert r["moving_pixels"] is None  # one image: nothing moves

    # Where the ground truth moves: a fixed camera over three frames in which one 2 x 2 block changes.
    class Video:
        class cameras:
            camtoworlds = torch.eye(4)[None].repeat(3, 1, 1)

        def image_rgb(self, i):
            img = np.zeros((12, 12, 3), np.float32)
            img[5:7, 5:7] = i / 2
            return img

    moving = ea.moving_pixels(Video(), [0, 1, 2], dilate=1)
    expect = torch.zeros(12, 12, dtype=torch.bool)
    expect[4:8, 4:8] = True
    assert torch.equal(moving, expect)
    Video.cameras.camtoworlds = Video.cameras.camtoworlds.clone()
    Video.cameras.camtoworlds[1, 0, 3] = 0.5  # a moving camera: no fixed-camera region
    assert ea.moving_pixels(Video(), [0, 1, 2]) is None


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`recon train --method swift4d` on demo:dynamic, short: 45 canonical + 75 d-score + 30 fine steps."""
    out = tmp_path_factory.mktemp("swift4d")
    args = ["train", "--method", "swift4d", "demo:dynamic", "--max-steps", "150", "--output-dir", out,
            "--trainer.image-every", "0", "--model.canonical-fraction", "0.3", "--model.dscore-min-steps", "75",
            "--model.importance-every", "0.5"]  # fmt: skip
    r = subprocess.run(RECON + [str(a) for a in args], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded(trained_run):
    from recon.engine.run import load_run

    return load_run(trained_run, device="cpu")


def test_cli_run_writes_metrics_with_per_time_psnr(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["num_images"] == 24 and len(metrics["per_time_psnr"]) == 24
    assert metrics["psnr"] > 17
    assert 0.0 < metrics["static_share"] < 1.0 and metrics["num_gaussians"] > 1000
    # The demo ships dynamic masks: the moving part is measured on its own, and is the harder part.
    assert metrics["dynamic_region_source"].startswith("ground-truth") and 0.02 < metrics["dynamic_share"] < 0.5
    assert metrics["psnr_dynamic"] < metrics["psnr_static"] and len(metrics["per_time_psnr_dynamic"]) == 24


def test_error_analysis_script_decomposes_the_error(trained_run, tmp_path):
    """scripts/swift4d_error_analysis.py: the inside/outside parts add up to the pooled error, and the moving
    objects of the demo are where the dynamic region is (its error share exceeds its area share on train views)."""
    out = tmp_path / "errors.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "swift4d_error_analysis.py"
    r = subprocess.run([sys.executable, str(script), str(trained_run), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for split in ("test", "train"):
        e = res[split]
        assert 0.0 < e["dynamic_area"] < 0.5 and 0.0 <= e["dynamic_error_share"] <= 1.0
        parts = 10 ** (-e["psnr_if_dynamic_perfect"] / 10) + 10 ** (-e["psnr_if_static_perfect"] / 10)
        assert parts == pytest.approx(10 ** (-e["psnr_pooled"] / 10), rel=1e-4)
        assert e["psnr_if_dynamic_perfect"] >= e["psnr_pooled"] and e["psnr_if_static_perfect"] >= e["psnr_pooled"]
        assert e["background_error_share"] is None  # the demo's images are opaque
    mv = res["test"]["moving_pixels"]  # the demo's test split: one camera over every time
    assert mv is not None and 0.0 < mv["area"] < 0.5 and mv["psnr_if_moving_perfect"] >= res["test"]["psnr_pooled"]
    assert res["train"]["moving_pixels"] is None  # several cameras
    assert res["train"]["dynamic_error_share"] > res["train"]["dynamic_area"]
    m = res["motion"]
    assert m["deformed"] > 0 and len(m["per_time"]) == 5
    assert all(row["median"] >= 0 and row["p90"] >= row["median"] for row in m["per_time"])
    assert m["first_to_last"]["max"] > 0  # the field moves the dynamic Gaussians of the demo
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: run directory does not exist"]


def _object_distance(scene, transform, means: torch.Tensor) -> torch.Tensor:
    """Distance (data units) from each Gaussian centre to the nearest moving object's surface at t = 0."""
    objs = scene.ground_truth["objects"]
    surf = []
    np.random.seed(0)  # trimesh's surface sampling
    for name, o in objs.items():
        pts = np.asarray(o["mesh"].sample(3000))
        if "transforms" in o:
            T = o["transforms"][0]
            pts = pts @ T[:3, :3].T + T[:3, 3]
        else:  # the flag: world vertices per frame
            mesh = o["mesh"].copy()
            mesh.vertices = o["vertices"][0]
            pts = np.asarray(mesh.sample(3000))
        surf.append(pts)
    surf = torch.from_numpy(np.concatenate(surf)).float()
    data_means = torch.as_tensor(transform.invert_points(means.double().numpy())).float()
    return torch.cdist(data_means, surf).min(1).values


def test_split_puts_moving_objects_in_dynamic(loaded):
    from recon.demo import load_demo

    m = loaded.method
    assert m.multiview and m.time_cells() == 24  # multi-view video: one time cell per frame (24 demo frames)
    dyn = m.dynamic()
    dist = _object_distance(load_demo("dynamic"), loaded.transform, m.splats["means"].detach())
    on, far = dist < 0.05, dist > 0.6
    assert on.sum() > 20 and far.sum() > 500
    assert dyn[on].float().mean() > 0.6, float(dyn[on].float().mean())
    assert dyn[far].float().mean() < 0.1, float(dyn[far].float().mean())


def _perturbed_copy(method):
    """Non-trivial field deltas whatever the training did (the heads' last layers start at zero)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for head in method.field.heads.heads.values():
            head.linears[-1].weight.normal_(0, 0.05)
            head.linears[-1].bias.normal_(0, 0.05)


def test_static_gaussians_untouched_and_exports_differ_only_for_dynamic(loaded):
    m = loaded.method
    state = {k: v.clone() for k, v in m.field.state_dict().items()}
    try:
        _perturbed_copy(m)
        ids = m._deformed_ids()
        dyn = torch.zeros(m.splats["means"].shape[0], dtype=torch.bool)
        dyn[ids] = True
        assert dyn.any() and (~dyn).any()
        a, b = m.gaussians(time=0.1), m.gaussians(time=0.9)
        for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
            assert torch.equal(a[k][~dyn], m.splats[k].detach()[~dyn]), k  # bit-identical static rows
            assert torch.equal(a[k][~dyn], b[k][~dyn]), k
            diff = (a[k] != b[k]).reshape(a[k].shape[0], -1).any(1)
            assert not diff[~dyn].any(), k
        assert ((a["means"] != b["means"]).any(1) == dyn).float().mean() > 0.99
    finally:
        m.field.load_state_dict(state)


def test_export_ply_at_a_time(loaded, tmp_path):
    from recon.export import export_run
    from recon.export.splats import read_ply

    p = export_run(loaded, "ply", output=tmp_path / "t.ply", time=0.5)
    g = read_ply(p)
    assert g["means"].shape[0] == loaded.method.splats["means"].shape[0]


def test_checkpoint_round_trip_renders_identically(trained_run, loaded):
    """metrics.json was computed by the in-memory model at the end of training; the reloaded model matches it."""
    from recon.eval.evaluate import evaluate

    ref = json.loads((trained_run / "metrics.json").read_text())
    m = evaluate(loaded.method, loaded.scene, "test", with_lpips=False)
    for r0, r1 in zip(ref["per_image"], m["per_image"]):
        assert abs(r0["psnr"] - r1["psnr"]) < 1e-4
    out = loaded.method.render(loaded.scene.cameras[0], time=0.5, outputs=("rgb", "alpha", "depth", "dynamic_mask"))
    assert set(out) == {"rgb", "alpha", "depth", "dynamic_mask"} and out["dynamic_mask"].shape == (96, 96, 1)


def test_all_dynamic_mode_deforms_everything():
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(all_dynamic=True), scene, 100, "cpu")
    m.setup(scene)
    assert m.stages.canonical_end == m.stages.dscore_end  # no d-score stage
    m._start_fine()
    _perturbed_copy(m)
    a, b = m.gaussians(time=0.0), m.gaussians(time=1.0)
    assert bool(m.dynamic().all()) and m.log_scalars()["static_share"] == 0.0
    assert (a["means"] != b["means"]).any(1).float().mean() > 0.99


def test_geometry_only_deltas_keep_appearance():
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(all_dynamic=True, appearance_deltas="off"), scene, 100, "cpu")
    m.setup(scene)
    m._start_fine()
    _perturbed_copy(m)
    a = m.gaussians(time=0.3)
    for k in ("opacities", "sh0", "shN"):
        assert torch.equal(a[k], m.splats[k].detach()), k
    assert not torch.equal(a["means"], m.splats["means"].detach())


def test_time_smoothness_penalises_acceleration_not_motion():
    """The temporal-smoothness term is 0 for deltas linear in t (constant velocity, whatever the speed), equals the
    squared second difference for curved ones (Δxyz in box units, scale as its factor), and trains the field."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(all_dynamic=True, appearance_deltas="off"), scene, 100, "cpu")
    m.setup(scene)
    m._start_fine()
    ids = m._deformed_ids()
    M = ids.numel()
    h = 1.0 / m.time_cells()
    box = m.box_max - m.box_min

    seen = []

    def fake(velocity, curvature):
        def field_at(ids, ts):
            seen.append(ids.numel())
            t = torch.tensor(ts).repeat_interleave(ids.numel())[:, None]
            d = velocity * t + curvature * t**2
            return {"xyz": d.expand(-1, 3) * box, "scale": torch.log1p(d).expand(-1, 3), "rotation": d.expand(-1, 4)}

        return field_at

    real = m._field_at
    try:
        m._field_at = fake(5.0, 0.0)
        assert float(m._time_smoothness(np.random.default_rng(0))) == pytest.approx(0.0, abs=1e-9)
        m._field_at = fake(0.0, 2.0)  # second difference 2 * c * h^2 on each of 3 + 3 + 4 components
        assert float(m._time_smoothness(np.random.default_rng(0))) == pytest.approx(10 * (4 * h**2) ** 2, rel=1e-4)
        assert seen[-1] == round(m.config.time_smoothness_share * M) < M  # a random share of them per step
        m.config.time_smoothness_share = 1.0
        assert float(m._time_smoothness(np.random.default_rng(0))) == pytest.approx(10 * (4 * h**2) ** 2, rel=1e-4)
        assert seen[-1] == M
    finally:
        m._field_at = real
    _perturbed_copy(m)
    loss = m._time_smoothness(np.random.default_rng(1))
    loss.backward()
    assert float(loss.detach()) > 0 and m.field.encoding.table.grad.abs().sum() > 0


def test_temporal_importance_pruning_sees_every_training_time():
    """A Gaussian the field shows at a single training time survives pruning, whichever time that is (the pass
    used to sample 16 views, and the demo has 24 times)."""
    from recon.cameras import camera_focus
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(all_dynamic=True), scene, 100, "cpu")
    m.setup(scene)
    m._start_fine()
    views = m.importance_views()
    train_times = {m._views.time(v) for v in m.train_pool}
    assert len(train_times) > m.config.importance_max_views  # the case the old sampler got wrong
    assert {m._views.time(v) for v in views} == train_times
    assert len(views) == len(set(views))

    focus = torch.from_numpy(camera_focus(scene.cameras.camtoworlds[torch.from_numpy(scene.split("train"))])).float()
    deformed = m.deformed
    for shown_at in sorted(train_times)[:: max(len(train_times) // 3, 1)]:

        def only_at(times, shown_at=shown_at):
            out = []
            for t, p in zip(times, deformed(times)):
                p = {k: v.detach().clone() for k, v in p.items()}
                p["opacities"][:] = -30.0  # everything invisible ...
                p["means"][0], p["scales"][0] = focus, math.log(0.05)
                if t == shown_at:
                    p["opacities"][0] = 10.0  # ... except Gaussian 0 at one training time
                out.append(p)
            return out

        m.deformed = only_at
        try:
            w = m.max_weights()
        finally:
            m.deformed = deformed
        assert w[0] > 0.5 and w[1:].max() < 1e-6, (shown_at, float(w[0]))


def test_change_masks_survive_a_checkpoint(tmp_path):
    """Monocular masks come from the canonical fit, which the fine stage keeps changing: a resumed run restores
    them from the checkpoint instead of recomputing them (bit-packed, any size)."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(), scene, 100, "cpu")
    rng = np.random.default_rng(0)
    m._masks = {v: torch.from_numpy(rng.random((37, 53)) > 0.7) for v in m.canonical_pool}
    torch.save(m.extra_state(), tmp_path / "extra.pt")
    fresh = Swift4D(Swift4DConfig(), scene, 100, "cpu")
    fresh.load_extra_state(torch.load(tmp_path / "extra.pt", weights_only=True))
    assert set(fresh._masks) == set(m._masks)
    for v in m._masks:
        assert fresh._masks[v].dtype == torch.bool and torch.equal(fresh._masks[v], m._masks[v])
    assert fresh._mask_share == pytest.approx(mk.mask_coverage(m._masks.values()))


def test_distortion_is_off_inside_the_change_mask():
    """Fine stage: the depth-distortion term counts only the pixels outside the view's change mask."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(), scene, 100, "cpu")
    m.setup(scene)
    m._start_fine()
    v = m.train_pool[0]
    cam = m._views.cameras[v]
    h, w = int(cam.heights[0]), int(cam.widths[0])
    p = m.deformed([m._views.time(v)])[0]
    everywhere = m.splats.depth_distortion(cam, p).detach()
    assert float(everywhere) > 0  # random initial points: many layers on every ray
    cam_views = m.frames_per_camera[m._camera_of[v]]
    for share, expect in ((1.0, 0.0), (0.0, float(everywhere))):
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[: int(share * h)] = True
        m._masks = {cam_views[0]: mask}
        assert float(m._still_distortion(v, cam, p, None).detach()) == pytest.approx(expect, rel=1e-5, abs=1e-9)


def test_all_dynamic_baseline_gets_the_same_masked_regulariser(tmp_path):
    """The all-dynamic baseline has no d-score stage; its fine stage computes the change masks on first use, so
    both variants train with the same loss."""
    import dataclasses

    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.demo import load_demo
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    scene = normalize_scene(scene, compute_normalization(scene))
    cfg = Swift4DConfig(all_dynamic=True, canonical_fraction=0.5, init_num_points=2000, distortion="on")
    cfg.densify = dataclasses.replace(cfg.densify, refine_every=10)
    m = Swift4D(cfg, scene, 20, "cpu")
    m.setup(scene)
    assert m.distortion_on(m.stages.dscore_end) and m._masks is None
    Trainer(TrainerConfig(max_steps=20, log_every=5, image_every=0, checkpoint_every=100, eval_at_end=False), m, scene, tmp_path / "run").train()
    assert m._masks is not None and set(m._masks) == set(m.canonical_pool)
    assert 0.0 < m.log_scalars()["mask_share"] < 1.0


def _monocular_demo():
    """The dynamic demo without camera ids: one image per (camera, time) pair, as monocular data is read."""
    import dataclasses

    from recon.demo import load_demo

    return dataclasses.replace(load_demo("dynamic"), camera_ids=None)


def test_monocular_schedule_extends_only_the_fine_stage():
    """Monocular data lays the canonical / d-score stages and the densification window out over
    mono_schedule_steps (2000) whatever --max-steps is, uses geometry-only deltas; video keeps fractions of the run."""
    from recon.demo import load_demo
    from recon.methods.swift4d.config import Stages
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    mono = _monocular_demo()
    cfg = Swift4DConfig(init_num_points=500)
    m = Swift4D(cfg, mono, 6000, "cpu")
    assert not m.multiview and not m.appearance_deltas and "opacity" not in m.field.heads.heads
    assert m.stages == Stages(500, 650, 6000)
    m.setup(mono)
    assert (m.splats.densifier.strategy.refine_start_iter, m.splats.densifier.strategy.refine_stop_iter) == (60, 1000)
    assert Swift4D(cfg, mono, 1000, "cpu").stages == Stages(250, 400, 1000)  # shorter runs: fractions of the run
    assert Swift4D(Swift4DConfig(mono_schedule_steps=0), mono, 6000, "cpu").stages == Stages(1500, 1800, 6000)
    video = Swift4D(cfg, load_demo("dynamic"), 6000, "cpu")
    assert video.multiview and video.appearance_deltas and video.stages == Stages(1500, 1800, 6000)
    video.setup(load_demo("dynamic"))
    assert video.splats.densifier.strategy.refine_stop_iter == 3000


def test_time_smoothness_trains_monocular_fine_stages_only(tmp_path):
    """The temporal-smoothness term enters the loss in the fine stage of monocular runs (mono_time_smoothness),
    not in the canonical / d-score stages and not for video (time_smoothness 0)."""
    import dataclasses

    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.demo import load_demo
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    for scene, expect_calls in ((_monocular_demo(), True), (load_demo("dynamic"), False)):
        scene = normalize_scene(scene, compute_normalization(scene))
        cfg = Swift4DConfig(init_num_points=1000, canonical_fraction=0.3, dscore_fraction=0.1, dscore_min_steps=1)
        cfg.densify = dataclasses.replace(cfg.densify, refine_every=10)
        m = Swift4D(cfg, scene, 20, "cpu")
        m.setup(scene)
        calls = []
        real = m._time_smoothness

        def spy(rng, window=None, real=real, calls=calls, m=m):
            calls.append(bool(m.fine_ready))
            return real(rng, window)

        m._time_smoothness = spy
        Trainer(TrainerConfig(max_steps=20, log_every=5, image_every=0, checkpoint_every=100, eval_at_end=False), m, scene, tmp_path / f"run{expect_calls}").train()
        if expect_calls:
            assert len(calls) == 20 - m.stages.dscore_end and all(calls)
        else:
            assert calls == []


def test_multiview_video_splits_at_the_papers_threshold():
    """Multi-view video uses dynamic_threshold (the paper's ζ); the monocular ζ does not touch it."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(dynamic_threshold=5.0, mono_dynamic_threshold=-3.0), scene, 100, "cpu")
    assert m.multiview and m.zeta == 5.0
    m.setup(scene)
    m.splats["d"].data = torch.linspace(-10, 10, m.splats["d"].numel())
    assert torch.equal(m.dynamic(), m.splats["d"].detach() > 5.0)


def test_distortion_mode_defaults_off_for_multiview_video():
    from recon.demo import load_demo
    from recon.errors import ReconError
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    assert not Swift4D(Swift4DConfig(), scene, 100, "cpu").use_distortion  # auto: off for multi-view video
    assert Swift4D(Swift4DConfig(distortion="on"), scene, 100, "cpu").distortion_on(99)
    with pytest.raises(ReconError, match="distortion must be auto, on or off"):
        Swift4D(Swift4DConfig(distortion="maybe"), scene, 100, "cpu")
    with pytest.raises(ReconError, match="appearance-deltas must be auto, on or off"):
        Swift4D(Swift4DConfig(appearance_deltas="yes"), scene, 100, "cpu")


def test_monocular_data_trains_on_plain_l1(monkeypatch):
    """Monocular data uses mono_ssim_lambda (0: plain L1, SSIM not even computed); video the 3DGS weight 0.2."""
    from recon.demo import load_demo
    from recon import losses
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    assert Swift4D(Swift4DConfig(), _monocular_demo(), 100, "cpu").ssim_lambda == 0.0
    assert Swift4D(Swift4DConfig(mono_ssim_lambda=0.1), _monocular_demo(), 100, "cpu").ssim_lambda == 0.1
    assert Swift4D(Swift4DConfig(), load_demo("dynamic"), 100, "cpu").ssim_lambda == 0.2
    a, b = torch.rand(2, 16, 16, 3).unbind(0)
    assert float(losses.l1_dssim(a, b, 0.2)) > float(0.8 * losses.l1(a, b))  # D-SSIM of unrelated images is > 0
    calls = []
    real_dssim = losses.dssim
    monkeypatch.setattr(losses, "dssim", lambda p, t: calls.append(1) or real_dssim(p, t))
    assert torch.equal(losses.l1_dssim(a, b, 0.0), losses.l1(a, b))
    assert calls == []  # weight 0: SSIM is skipped, not multiplied by 0
    losses.l1_dssim(a, b, 0.2)
    assert calls == [1]


def test_time_window_grows_from_the_canonical_frame_with_its_newest_time_in_every_step():
    """Multi-view video: the fine stage trains on times up to a window that grows over time_ramp of the stage;
    each step's first view shows the window's newest time. Monocular data and time_ramp 0 train every time."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    m = Swift4D(Swift4DConfig(), scene, 1000, "cpu")
    start, n = m.stages.dscore_end, m.ramp_steps()
    assert n == round(0.5 * (1000 - start))
    windows = [m.time_window(start + k) for k in range(n)]
    assert windows[0] < 0.01 and windows == sorted(windows) and windows[-1] == pytest.approx(1.0)
    assert m.time_window(start + n) is None and m.time_window(999) is None
    pool, newest = m._pool_until(0.5)
    assert set(pool) == {v for v in m.train_pool if m._views.time(v) <= 0.5}
    latest = max(m._views.time(v) for v in pool)
    n_train_cameras = len(set(scene.camera_ids[scene.splits["train"]].tolist()))
    assert {m._views.time(v) for v in newest} == {latest} and len(newest) == n_train_cameras  # one per camera
    assert len(m._pool_until(0.0)[0]) == n_train_cameras  # the first frame's views at least
    assert Swift4D(Swift4DConfig(time_ramp=0.0), scene, 1000, "cpu").time_window(start) is None
    mono = Swift4D(Swift4DConfig(), _monocular_demo(), 1000, "cpu")
    assert mono.ramp_steps() == 0 and mono.time_window(mono.stages.dscore_end) is None


def test_field_time_axis_is_multiresolution_for_video():
    """Video: the time axis doubles from one cell per level up to one cell per frame; monocular data keeps the
    reference's schedule (the spatial axes' base resolution, capped)."""
    from recon.demo import load_demo
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    video = Swift4D(Swift4DConfig(), load_demo("dynamic"), 100, "cpu")
    t_res = [r[3] for r in video.field.encoding.layout.resolutions]
    assert t_res[:6] == [1, 2, 4, 8, 16, 24] and set(t_res[5:]) == {24}
    mono = Swift4D(Swift4DConfig(), _monocular_demo(), 100, "cpu")
    m_res = [r[3] for r in mono.field.encoding.layout.resolutions]
    assert m_res[0] == min(16, mono.time_cells()) and set(m_res) == {mono.time_cells()}


def test_opaque_video_trains_over_random_backgrounds(tmp_path):
    """Renders of opaque training images are composited over a new random colour each step (``data``: the scene's
    own), so that no half-transparent film can pass for the backdrop."""
    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.demo import load_demo
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods.swift4d.model import Swift4D, Swift4DConfig

    scene = load_demo("dynamic")
    scene = normalize_scene(scene, compute_normalization(scene))
    sky = torch.tensor(scene.background, dtype=torch.float32)
    for mode in ("random", "data"):
        m = Swift4D(Swift4DConfig(init_num_points=500, opaque_background=mode), scene, 4, "cpu")
        m.setup(scene)
        seen = []
        real = m.splats.rasterize

        def spy(camera, background, *a, real=real, seen=seen, **kw):
            seen.append(None if background is None else background.detach().clone())
            return real(camera, background, *a, **kw)

        m.splats.rasterize = spy
        Trainer(TrainerConfig(max_steps=4, log_every=2, image_every=0, checkpoint_every=100, eval_at_end=False), m, scene, tmp_path / mode).train()
        bgs = [b for b in seen if b is not None]
        assert bgs
        if mode == "random":
            assert not any(torch.allclose(b, sky) for b in bgs) and len({tuple(b.tolist()) for b in bgs}) > 1
        else:
            assert all(torch.allclose(b, sky) for b in bgs)
    from recon.errors import ReconError

    with pytest.raises(ReconError, match="opaque-background must be random or data"):
        Swift4D(Swift4DConfig(opaque_background="blue"), scene, 4, "cpu")

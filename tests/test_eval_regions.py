"""Dynamic-region metrics (recon.eval.regions) against hand-computed cases: a known mask and a known error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import Cameras, orbit_poses
from recon.data.scene import ArrayImages, SceneData
from recon.errors import ReconError
from recon.eval.evaluate import evaluate
from recon.eval.metrics import ssim_map
from recon.eval.regions import dynamic_regions, region_sums

S = 40  # image size


def _video(n_cams: int = 3, n_frames: int = 6, masks: bool = True, mono: bool = False) -> SceneData:
    """A fixed-camera video: grey noise background, a bright 8x8 square sliding along row 16..24 (the same in
    every camera; cameras only have to exist). Camera 0 is the test camera. ``mono``: one frame per camera."""
    rng = np.random.default_rng(0)
    bg = rng.uniform(0.2, 0.5, (S, S, 3)).astype(np.float32)
    frames, dyn, times, cam_ids = [], [], [], []
    for c in range(n_cams):
        for f in range(n_frames):
            img, m = bg.copy(), np.zeros((S, S), bool)
            x = 4 + 4 * f
            img[16:24, x : x + 8] = [0.9, 0.8, 0.1]
            m[16:24, x : x + 8] = True
            frames.append(img)
            dyn.append(m)
            times.append(f / max(n_frames - 1, 1))
            cam_ids.append(c)
    n = len(frames)
    cams = Cameras.create(orbit_poses(n, 3.0, 10.0), 40.0, 40.0, S / 2, S / 2, S, S, times=times)
    test = np.array([i for i in range(n) if cam_ids[i] == 0])
    train = np.array([i for i in range(n) if cam_ids[i] != 0])
    return SceneData(
        name="video", format="test:video", root=Path("."), cameras=cams, images=ArrayImages(np.stack(frames)),
        splits={"train": train, "test": test}, camera_ids=None if mono else np.array(cam_ids),
        frame_ids=None if mono else np.array([i % n_frames for i in range(n)]),
        ground_truth={"dynamic_mask": np.stack(dyn)} if masks else {},
    )  # fmt: skip


class _Offset:
    """A 'method' whose render is the ground truth plus ``dyn_err`` on the scene's dynamic pixels and ``still_err``
    elsewhere."""

    device_ = torch.device("cpu")

    def __init__(self, scene: SceneData, dyn_err: float, still_err: float):
        self.scene, self.dyn_err, self.still_err = scene, dyn_err, still_err
        self.index = {float(scene.cameras.times[i]): i for i in scene.split("test")}

    def render(self, camera, time=None, outputs=("rgb",), background=None):
        i = self.index[float(time)]
        gt = torch.from_numpy(self.scene.image_rgb(i))
        m = torch.from_numpy(self.scene.ground_truth_masks[i])[..., None]
        return {"rgb": gt + torch.where(m, self.dyn_err, self.still_err)}


def _with_masks(scene: SceneData, masks: np.ndarray) -> SceneData:
    scene.ground_truth_masks = masks
    return scene


def test_region_sums_hand_computed():
    gt = torch.full((S, S, 3), 0.5)
    mask = torch.zeros(S, S, dtype=torch.bool)
    mask[10:30, 5:15] = True  # 200 of 1600 px
    pred = gt + torch.where(mask[..., None], 0.1, 0.01)
    s = region_sums(pred, gt, mask).summary()
    assert s["psnr_dynamic"] == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert s["psnr_static"] == pytest.approx(40.0, abs=1e-4)  # mse 1e-4
    assert s["dynamic_share"] == pytest.approx(200 / 1600)
    # SSIM: the map's valid windows (cropped by 5 px) averaged over the region's pixels, by hand.
    full = ssim_map(pred, gt).mean(-1)
    inner = mask[5:-5, 5:-5]
    assert s["ssim_dynamic"] == pytest.approx(float(full[inner].mean()), rel=1e-6)
    assert s["ssim_static"] == pytest.approx(float(full[~inner].mean()), rel=1e-6)
    assert s["ssim_dynamic"] < s["ssim_static"]


def test_empty_region_gives_none_not_a_number():
    gt = torch.rand(S, S, 3)
    s = region_sums(gt, gt, torch.zeros(S, S, dtype=torch.bool)).summary()
    assert s["psnr_dynamic"] is None and s["ssim_dynamic"] is None and s["dynamic_share"] == 0.0


def test_evaluate_with_ground_truth_masks_pools_over_pixels():
    scene = _video()
    masks = scene.ground_truth["dynamic_mask"]
    method = _Offset(_with_masks(scene, masks), dyn_err=0.1, still_err=0.01)
    m = evaluate(method, scene, "test", with_lpips=False)
    assert m["dynamic_region_source"].startswith("ground-truth")
    assert m["psnr_dynamic"] == pytest.approx(20.0, abs=1e-3)
    assert m["psnr_static"] == pytest.approx(40.0, abs=1e-3)
    assert m["dynamic_share"] == pytest.approx(64 / (S * S))
    # whole-image PSNR is between the two, dominated by the still part
    assert 20.0 < m["psnr"] < 40.0 and m["psnr"] == pytest.approx(-10 * math.log10((64 * 0.01 + (S * S - 64) * 1e-4) / (S * S)), abs=1e-3)
    assert len(m["per_time_psnr_dynamic"]) == 6 and all(v == pytest.approx(20.0, abs=1e-3) for v in m["per_time_psnr_dynamic"].values())
    assert all(r["psnr_dynamic"] == pytest.approx(20.0, abs=1e-3) for r in m["per_image"])


def test_video_without_masks_uses_the_test_cameras_temporal_change():
    scene = _video(masks=False)
    regions, why = dynamic_regions(scene, scene.split("test"))
    assert regions is not None and why == "" and "temporal change" in regions.source
    m = next(iter(regions.masks.values()))
    swept = np.zeros((S, S), bool)
    swept[16:24, 4:32] = True  # every place the square visits
    m = m.numpy()
    # The blur widens the region by a pixel or two around the swept band and nothing else changes.
    assert m[swept].mean() > 0.95
    assert not m[:10].any() and not m[30:].any()
    # Evaluated with the same offsets on the swept band: its PSNR is that of the band.
    truth = np.stack([m] * len(scene))
    method = _Offset(_with_masks(scene, truth), dyn_err=-0.1, still_err=0.0)  # (no clamping at 0 or 1)
    out = evaluate(method, scene, "test", with_lpips=False)
    assert out["psnr_dynamic"] == pytest.approx(20.0, abs=1e-3)
    assert out["psnr_static"] == pytest.approx(100.0)  # mse clamped at 1e-10


def test_monocular_video_without_masks_says_why_and_on_is_an_error():
    scene = _video(masks=False, mono=True)
    method = _Offset(_with_masks(scene, scene.ground_truth.get("dynamic_mask", np.zeros((len(scene), S, S), bool))), 0.1, 0.0)
    m = evaluate(method, scene, "test", with_lpips=False)
    assert "psnr_dynamic" not in m and "monocular" in m["dynamic_region_note"]
    with pytest.raises(ReconError, match="monocular"):
        evaluate(method, scene, "test", with_lpips=False, dynamic_region="on")


def test_static_data_asked_for_dynamic_metrics_says_no_time_axis():
    from tests.helpers import blob_scene

    scene = blob_scene(n_views=6, size=24)
    regions, why = dynamic_regions(scene, scene.split("test"))
    assert regions is None and "no time axis" in why


def test_viewer_metrics_panel_shows_the_moving_part(tmp_path):
    import json

    from recon.viewer.gui import metrics_line

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"split": "test", "num_images": 24, "step": 2000, "psnr": 22.0, "ssim": 0.76,
                                "psnr_dynamic": 15.43, "ssim_dynamic": 0.61, "dynamic_share": 0.081}))  # fmt: skip
    line = metrics_line(path)
    assert "moving part (8.1 % of pixels): PSNR 15.43 dB, SSIM 0.6100" in line and "PSNR 22.00 dB" in line
    path.write_text(json.dumps({"split": "test", "num_images": 3, "psnr": 30.0, "ssim": 0.9}))  # a static run
    assert "moving" not in metrics_line(path)

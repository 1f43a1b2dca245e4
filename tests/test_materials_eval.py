"""`recon eval --materials` (recon/eval/materials.py): the protocol on hand-made cases with known errors, on the
path-traced trio's real ground-truth files, and its one-line errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import orbit_poses
from recon.data import load_scene
from recon.data.normalize import SceneTransform, normalize_scene
from recon.errors import ReconError
from recon.eval.materials import MATERIAL_OUTPUTS, albedo_scale, evaluate_materials, load_ground_truth
from recon.io.images import save_image

SHARED = Path(os.environ.get("RECON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TRIO = SHARED / "pbr_blender_trio"


def _write_dataset(root: Path, n_test: int = 3, size: int = 16) -> list[dict]:
    """A Blender-layout folder whose test views carry _gt.npz: a left half of object 1 (metallic), a right half of
    object 2 (rough dielectric), a background row."""
    rng = np.random.default_rng(0)
    c2w = orbit_poses(n_test + 2, 4.0, 20.0)
    gts = []
    for split, ids in (("train", range(2)), ("test", range(2, n_test + 2))):
        frames = []
        (root / split).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(ids):
            name = f"{split}/r_{k:03d}"
            save_image(torch.rand(size, size, 3), root / f"{name}.png")
            frames.append({"file_path": f"./{name}", "transform_matrix": (c2w[i] @ np.diag([1, -1, -1, 1])).tolist()})
            if split == "test":
                objindex = np.zeros((size, size), np.uint8)
                objindex[1:, : size // 2], objindex[1:, size // 2 :] = 1, 2
                n = rng.normal(size=(size, size, 3))
                gt = {"albedo": rng.uniform(0.1, 0.8, (size, size, 3)), "roughness": np.where(objindex == 1, 0.25, 0.8),
                      "metallic": np.where(objindex == 1, 1.0, 0.0), "normal": n / np.linalg.norm(n, axis=-1, keepdims=True),
                      "alpha": (objindex > 0).astype(np.float32), "depth": np.ones((size, size), np.float32), "objindex": objindex}  # fmt: skip
                np.savez(root / f"{name}_gt.npz", **{k: (v.astype(np.float16) if k not in ("objindex", "depth") else v) for k, v in gt.items()})
                gts.append(load_ground_truth(root / f"{name}.png"))
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    (root / "meta.json").write_text(json.dumps({"materials": {"gold": {"roughness": 0.25, "metallic": 1.0}, "clay": {"roughness": 0.8, "metallic": 0.0}}}))
    return gts


class _Oracle:
    """Renders the ground truth of the view it is asked for, changed as told (a stand-in method)."""

    name = "oracle"
    render_outputs = ("rgb",) + MATERIAL_OUTPUTS
    device_ = torch.device("cpu")

    def __init__(self, scene, gts, rotation, albedo_factor=1.0, roughness_bias=0.0, normal_tilt_deg=0.0):
        self.poses = [scene.cameras.camtoworlds[i] for i in scene.split("test")]
        self.gts, self.rotation = gts, torch.as_tensor(rotation, dtype=torch.float32)
        self.albedo_factor, self.roughness_bias, self.tilt = albedo_factor, roughness_bias, math.radians(normal_tilt_deg)

    def render(self, camera, time=None, outputs=("rgb",)):
        k = next(j for j, p in enumerate(self.poses) if torch.allclose(p, camera.camtoworlds[0]))
        gt = {key: torch.from_numpy(v) for key, v in self.gts[k].items() if key != "objindex"}
        n = gt["normal"]
        # tilt every normal by a known angle about an axis perpendicular to it
        axis = torch.nn.functional.normalize(torch.cross(n, torch.tensor([0.3, 0.5, 0.8]).expand_as(n), dim=-1), dim=-1)
        tilted = n * math.cos(self.tilt) + torch.cross(axis, n, dim=-1) * math.sin(self.tilt)
        return {"base_color": gt["albedo"] * self.albedo_factor, "roughness": (gt["roughness"] + self.roughness_bias)[..., None],
                "metallic": gt["metallic"][..., None], "normal": tilted @ self.rotation.T}  # fmt: skip


def _rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_a_perfect_prediction_up_to_the_albedo_scale_scores_perfectly(tmp_path):
    gts = _write_dataset(tmp_path)
    transform = SceneTransform(_rotation(30), np.array([0.1, 0.0, 0.0]), 0.5)  # a rotated run frame
    scene = normalize_scene(load_scene(tmp_path), transform)
    m = evaluate_materials(_Oracle(scene, gts, transform.rotation, albedo_factor=0.5), scene, transform, out_dir=tmp_path / "panels")
    np.testing.assert_allclose(m["albedo_scale"], [2.0, 2.0, 2.0], rtol=1e-5)
    assert m["albedo_psnr"] > 60 and m["albedo_psnr_linear"] > 60
    assert m["roughness_mae"] < 1e-6 and m["metallic_mae"] < 1e-6 and m["normal_angle_deg"] < 0.1
    objects = {r["name"]: r for r in m["per_object"]}
    assert objects["gold"]["pred_metallic"] == pytest.approx(1.0) and objects["clay"]["pred_metallic"] == pytest.approx(0.0)
    assert len(list((tmp_path / "panels").glob("*.png"))) == 3


def test_known_errors_are_measured(tmp_path):
    gts = _write_dataset(tmp_path)
    transform = SceneTransform(_rotation(-50), np.zeros(3), 1.0)
    scene = normalize_scene(load_scene(tmp_path), transform)
    m = evaluate_materials(_Oracle(scene, gts, transform.rotation, roughness_bias=0.1, normal_tilt_deg=10.0), scene, transform)
    assert m["roughness_mae"] == pytest.approx(0.1, abs=1e-4)
    assert m["normal_angle_deg"] == pytest.approx(10.0, abs=0.05)
    # the albedo alone is left: the least-squares scale of an exact prediction is 1
    np.testing.assert_allclose(m["albedo_scale"], [1.0, 1.0, 1.0], rtol=1e-4)


def test_albedo_scale_is_the_least_squares_factor_per_channel():
    pred = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]])
    gt = np.array([[2.0, 1.0, 0.5], [5.0, 0.5, 0.5]])
    s = albedo_scale([(pred, gt)])
    np.testing.assert_allclose(s, [(2 + 15) / 10, (2 + 0.5) / 5, 1.0])


def test_bad_requests_are_one_line_errors(tmp_path):
    _write_dataset(tmp_path)
    scene = load_scene(tmp_path)

    class NoMaterials:
        name, render_outputs, device_ = "gs", ("rgb", "alpha", "depth"), torch.device("cpu")

    with pytest.raises(ReconError, match="renders no base_color, roughness, metallic, normal"):
        evaluate_materials(NoMaterials(), scene, SceneTransform.identity())
    with pytest.raises(ReconError, match="no ground-truth materials") as exc:
        evaluate_materials(_Oracle(scene, [], np.eye(3)), scene, SceneTransform.identity(), split="train")
    assert "r_000_gt.npz" in str(exc.value)


@pytest.mark.skipif(not TRIO.is_dir(), reason=f"shared data not found at {TRIO}")
def test_the_trio_ground_truth_reads_and_names_its_objects():
    scene = load_scene(TRIO)
    assert {"test_relight_city", "test_relight_sunset"} <= set(scene.splits)  # the relit views are splits
    indices = [int(i) for i in scene.split("test")]
    gts = [load_ground_truth(scene.describe_image(i)) for i in indices]
    m = evaluate_materials(_Oracle(scene, gts, np.eye(3)), scene, SceneTransform.identity())
    assert m["num_images"] == 10 and m["albedo_psnr"] > 60 and m["normal_angle_deg"] < 0.1
    names = {r["name"]: r for r in m["per_object"]}
    assert set(names) == {"bunny", "gold_sphere", "brick_box"}
    assert names["gold_sphere"]["pred_metallic"] > 0.9 and names["bunny"]["pred_metallic"] < 0.1

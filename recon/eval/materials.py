"""Material evaluation of inverse-rendering methods against per-view ground truth (``recon eval RUN --materials``).

Data: each evaluated image ``<name>.png`` has ``<name>_gt.npz`` beside it (../shared/data/pbr_blender_trio's test
and relit views: ``albedo`` [H, W, 3] linear base colour, ``roughness``, ``metallic`` [H, W], ``normal`` [H, W, 3]
unit, world = data frame, ``alpha`` [H, W] coverage, ``objindex`` [H, W] object ids, 0 = background).

Protocol (one implementation for every method that renders the four outputs ``base_color``, ``roughness``,
``metallic``, ``normal``; see :class:`recon.methods.base.Method.render_outputs`):

- pixels: inside the data's mask, alpha > 0.5 (its ``_mask.png``);
- albedo: lighting and base colour trade a global factor, so the predicted base colour is first scaled per channel
  by the least-squares factor s_c = sum(gt_c pred_c) / sum(pred_c^2) over the masked pixels of the whole split;
  then PSNR of the aligned, clamped albedo against GT, both sRGB-encoded (``albedo_psnr``; the same in linear
  values: ``albedo_psnr_linear``), per image, averaged over the images;
- roughness and metallic: mean absolute error, per image, averaged;
- normals: mean angle in degrees between the predicted normal (the run's normalised frame turned back into the data
  frame) and GT, per image, averaged;
- per object (``objindex``): the mean predicted and GT metallic and roughness, and the object's name when the data's
  ``meta.json`` lists its materials (matched by their GT roughness and metallic).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from recon.color import linear_to_srgb
from recon.errors import ReconError

#: The render outputs the evaluation reads.
MATERIAL_OUTPUTS = ("base_color", "roughness", "metallic", "normal")


def ground_truth_path(image_path: str | Path) -> Path:
    p = Path(image_path)
    return p.with_name(p.stem + "_gt.npz")


def load_ground_truth(image_path: str | Path) -> dict[str, np.ndarray]:
    """The GT materials of one image (module docstring), as float32 / int arrays; a missing or malformed file is a
    :class:`ReconError` naming it."""
    path = ground_truth_path(image_path)
    if not path.is_file():
        raise ReconError(f"no ground-truth materials for this image (expected {path.name} beside it; --materials needs data that has them, e.g. pbr_blender_trio)", path)
    try:
        with np.load(path) as z:
            gt = {k: np.asarray(z[k]) for k in ("albedo", "roughness", "metallic", "normal", "alpha")}
            gt["objindex"] = np.asarray(z["objindex"]) if "objindex" in z.files else None
    except (KeyError, ValueError, OSError) as exc:
        raise ReconError(f"ground-truth materials unreadable ({type(exc).__name__}: {exc})", path) from None
    return {k: (v.astype(np.float32) if v is not None and k != "objindex" else v) for k, v in gt.items()}


def albedo_scale(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """[3] per-channel least-squares factor s minimising |s pred - gt|^2 over ``pairs`` of (pred [P, 3], gt [P, 3])."""
    num = sum((p.astype(np.float64) * g).sum(0) for p, g in pairs)
    den = sum((p.astype(np.float64) ** 2).sum(0) for p, _ in pairs)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def evaluate_materials(method, scene, transform, split: str = "test", out_dir: Path | None = None, console=None) -> dict:
    """Score ``method``'s material outputs on ``split`` of ``scene`` (normalised, as :func:`recon.engine.run.load_run`
    gives it; ``transform`` the run's :class:`~recon.data.normalize.SceneTransform`). Returns the metrics (module
    docstring) with ``per_image`` rows and ``per_object`` rows; writes prediction | GT panels to ``out_dir``."""
    missing = [o for o in MATERIAL_OUTPUTS if o not in method.render_outputs]
    if missing:
        raise ReconError(f"method {method.name!r} renders no {', '.join(missing)}: --materials scores methods that render {', '.join(MATERIAL_OUTPUTS)}")
    if split not in scene.splits:
        raise ReconError(f"the data has no split {split!r} (it has {', '.join(scene.splits)})")
    indices = [int(i) for i in scene.split(split)]
    gts = [load_ground_truth(scene.describe_image(i)) for i in indices]  # all present before anything renders
    to_data = torch.as_tensor(np.asarray(transform.rotation, dtype=np.float32)).T  # normalised -> data frame
    rows, pairs, views = [], [], []
    for i, gt in zip(indices, gts):
        cam = scene.cameras[i : i + 1].to(method.device_)
        t = None if cam.times is None else float(cam.times[0])
        with torch.no_grad():
            out = method.render(cam, time=t, outputs=MATERIAL_OUTPUTS)
        pred = {k: out[k].detach().float().cpu() for k in MATERIAL_OUTPUTS}
        normal = torch.nn.functional.normalize(pred["normal"] @ to_data.T, dim=-1).numpy()
        mask = gt["alpha"] > 0.5
        if pred["base_color"].shape[:2] != mask.shape:
            raise ReconError(f"rendered {tuple(pred['base_color'].shape[:2])} but the ground truth is {mask.shape}", ground_truth_path(scene.describe_image(i)))
        views.append((i, gt, mask, {k: v.numpy() for k, v in pred.items()}, normal))
        pairs.append((views[-1][3]["base_color"][mask], gt["albedo"][mask]))
    scale = albedo_scale(pairs)
    per_object: dict[int, dict[str, list]] = {}
    for i, gt, mask, pred, normal in views:
        if not mask.any():
            continue
        aligned = np.clip(pred["base_color"] * scale, 0, 1)
        gt_n = gt["normal"].astype(np.float64)
        gt_n /= np.maximum(np.linalg.norm(gt_n, axis=-1, keepdims=True), 1e-12)  # (stored as float16)
        cos = np.clip((normal.astype(np.float64) * gt_n).sum(-1), -1, 1)
        row = {
            "index": i,
            "image": Path(scene.describe_image(i)).name,
            "albedo_psnr": _psnr(linear_to_srgb(aligned[mask]), linear_to_srgb(gt["albedo"][mask])),
            "albedo_psnr_linear": _psnr(aligned[mask], np.clip(gt["albedo"][mask], 0, 1)),
            "roughness_mae": float(np.abs(pred["roughness"][..., 0] - gt["roughness"])[mask].mean()),
            "metallic_mae": float(np.abs(pred["metallic"][..., 0] - gt["metallic"])[mask].mean()),
            "normal_angle_deg": float(np.degrees(np.arccos(cos[mask])).mean()),
        }
        rows.append(row)
        if gt["objindex"] is not None:
            for obj in np.unique(gt["objindex"][mask]):
                if obj == 0:  # background id on silhouette pixels inside the mask
                    continue
                sel = mask & (gt["objindex"] == obj)
                acc = per_object.setdefault(int(obj), {"pred_metallic": [], "gt_metallic": [], "pred_roughness": [], "gt_roughness": []})
                for name, arr in (("pred_metallic", pred["metallic"][..., 0]), ("gt_metallic", gt["metallic"]),
                                  ("pred_roughness", pred["roughness"][..., 0]), ("gt_roughness", gt["roughness"])):  # fmt: skip
                    acc[name].append(arr[sel])
        if out_dir is not None:
            _write_panel(Path(out_dir) / f"{Path(scene.describe_image(i)).stem}.png", aligned, pred, normal, gt, mask)
    if not rows:
        raise ReconError(f"no view of split {split!r} has foreground pixels in its ground truth")
    metrics = {k: float(np.mean([r[k] for r in rows])) for k in ("albedo_psnr", "albedo_psnr_linear", "roughness_mae", "metallic_mae", "normal_angle_deg")}
    metrics.update({"split": split, "num_images": len(rows), "albedo_scale": [float(x) for x in scale], "per_image": rows,
                    "per_object": _object_rows(per_object, scene.root)})  # fmt: skip
    return metrics


def _object_rows(per_object: dict, root) -> list[dict]:
    names = _material_names(root)
    out = []
    for obj, acc in sorted(per_object.items()):
        row = {"objindex": obj, **{k: float(np.concatenate(v).mean()) for k, v in acc.items()}, "pixels": int(sum(len(v) for v in acc["gt_metallic"]))}
        if names:
            row["name"] = min(names, key=lambda n: abs(names[n][0] - row["gt_roughness"]) + abs(names[n][1] - row["gt_metallic"]))
        out.append(row)
    return out


def _material_names(root) -> dict[str, tuple[float, float]]:
    """{object name: (roughness, metallic)} from the data's meta.json ``materials``, if it has them."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text())
        return {name: (float(m["roughness"]), float(m["metallic"])) for name, m in meta.get("materials", {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_panel(path: Path, aligned, pred, normal, gt, mask) -> None:
    """Prediction (top) over GT (bottom): aligned albedo (sRGB), roughness, metallic, normal ((n + 1) / 2)."""
    from recon.io.images import save_image

    def row(albedo, rough, metal, nrm):
        grey = lambda x: np.repeat(np.clip(x, 0, 1)[..., None], 3, -1)  # noqa: E731
        return np.concatenate([linear_to_srgb(albedo), grey(rough), grey(metal), np.clip(nrm * 0.5 + 0.5, 0, 1)], 1)

    m = mask[..., None]
    top = row(aligned * m, pred["roughness"][..., 0] * mask, pred["metallic"][..., 0] * mask, normal * m)
    bottom = row(gt["albedo"] * m, gt["roughness"] * mask, gt["metallic"] * mask, gt["normal"] * m)
    save_image(torch.from_numpy(np.concatenate([top, bottom], 0).astype(np.float32)), path)

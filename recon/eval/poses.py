"""How far estimated camera poses are from reference ones, up to the similarity transform SfM cannot know.

The estimated camera centres are aligned to the reference centres by the least-squares similarity (Umeyama 1991:
scale, rotation, translation); then each camera's rotation error is the angle between its reference orientation
and its aligned estimated one, and its centre error the distance between the centres, reported in the
reference's units and as a fraction of the reference cameras' spread (the largest distance of a camera centre from
their mean).
"""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``x -> s R x + t`` that best maps points ``src`` [N, 3] onto ``dst`` [N, 3] (least squares)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if len(src) < 3:
        raise ValueError("a similarity needs at least 3 point pairs")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    r = u @ sign @ vt
    var_s = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_s)
    t = mu_d - s * r @ mu_s
    return s, r, t


def pose_errors(ref_c2w: np.ndarray, est_c2w: np.ndarray) -> dict:
    """Errors of ``est_c2w`` [N, 4, 4] against ``ref_c2w`` [N, 4, 4] (same cameras, same order, same camera axes
    convention) after the best similarity of the centres.

    Returns:
        ``rotation_deg`` [N], ``center`` [N] (reference units), ``center_rel`` [N] (fraction of the spread),
        ``spread``, ``scale``, and the medians ``rotation_deg_median``, ``center_rel_median``.
    """
    ref, est = np.asarray(ref_c2w, np.float64), np.asarray(est_c2w, np.float64)
    s, r, t = umeyama(est[:, :3, 3], ref[:, :3, 3])
    centres = (s * (r @ est[:, :3, 3].T)).T + t
    center = np.linalg.norm(centres - ref[:, :3, 3], axis=1)
    rel = np.einsum("nji,njk->nik", ref[:, :3, :3], r @ est[:, :3, :3])  # R_ref^T (R R_est)
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rot = np.degrees(np.arccos(cos))
    spread = float(np.linalg.norm(ref[:, :3, 3] - ref[:, :3, 3].mean(0), axis=1).max())
    return {
        "rotation_deg": rot,
        "center": center,
        "center_rel": center / spread,
        "spread": spread,
        "scale": s,
        "rotation_deg_median": float(np.median(rot)),
        "center_rel_median": float(np.median(center / spread)),
    }

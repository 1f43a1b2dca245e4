"""Gaussian parameters -> the arrays viser's client-side splat renderer takes.

Methods hand out pre-activation parameters (log scales, wxyz quaternions of any norm, logit opacities, SH
coefficients); viser wants world-space covariances, an RGB colour and an opacity per splat. The browser renders
only the view-independent colour (SH degree 0), which is what the DC coefficient gives.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.rotations import quat_to_rotmat

SH_C0 = 0.28209479177387814  # Y_0^0


def covariances(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] world covariances R diag(s^2) R^T from [N, 3] log scales and [N, 4] wxyz quaternions."""
    M = quat_to_rotmat(quats.float()) * torch.exp(log_scales.float())[:, None, :]
    return M @ M.transpose(1, 2)


def viser_splats(params: dict[str, torch.Tensor], min_opacity: float = 1.0 / 255.0) -> dict[str, np.ndarray]:
    """Arguments for ``scene.add_gaussian_splats`` from a method's ``gaussians()`` dict.

    Args:
        params: ``means`` [N, 3], ``scales`` [N, 3] (log), ``quats`` [N, 4] (wxyz), ``opacities`` [N] (logit),
            ``sh0`` [N, 1, 3] (or ``colors`` [N, 3] in [0, 1] for methods without SH).
        min_opacity: splats fainter than this are dropped (they are invisible and cost the browser sorting time).

    Returns:
        ``centers`` [M, 3], ``covariances`` [M, 3, 3], ``rgbs`` [M, 3], ``opacities`` [M, 1], float32 numpy.
    """
    means = params["means"].detach().float().cpu()
    opac = torch.sigmoid(params["opacities"].detach().float().cpu().reshape(-1))
    if "sh0" in params:
        rgb = params["sh0"].detach().float().cpu().reshape(len(means), 3) * SH_C0 + 0.5
    else:
        rgb = params["colors"].detach().float().cpu().reshape(len(means), 3)
    keep = opac >= min_opacity
    cov = covariances(params["scales"].detach().cpu()[keep], params["quats"].detach().cpu()[keep])
    return {
        "centers": means[keep].numpy().astype(np.float32),
        "covariances": cov.numpy().astype(np.float32),
        "rgbs": rgb[keep].clamp(0, 1).numpy().astype(np.float32),
        "opacities": opac[keep, None].numpy().astype(np.float32),
    }

"""Shared Gaussian machinery below the methods: per-Gaussian parameters and their Adam, density control (gsplat's
strategies; MCMC on any device)."""

from recon.gaussians.densify import DensifyConfig, Densifier
from recon.gaussians.params import init_splats, knn_mean_distance, make_adam, random_points, resize_like, rgb_to_sh, set_lr, sh_to_rgb

__all__ = [
    "DensifyConfig",
    "Densifier",
    "init_splats",
    "knn_mean_distance",
    "make_adam",
    "random_points",
    "resize_like",
    "rgb_to_sh",
    "set_lr",
    "sh_to_rgb",
]

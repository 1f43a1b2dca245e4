"""Shared Gaussian machinery below the methods: the :class:`GaussianModel` every Gaussian method composes (named
per-Gaussian parameters and extra attributes, one Adam each, density control through gsplat's strategies, MCMC on
any device) and the initialisation helpers."""

from recon.gaussians.densify import DensifyConfig, Densifier
from recon.gaussians.model import FLAT_SCALE, GAUSSIAN_KEYS, Attribute, GaussianConfig, GaussianModel
from recon.gaussians.params import (
    focus_box,
    init_splats,
    initial_points,
    knn_mean_distance,
    make_adam,
    random_points,
    resize_like,
    rgb_to_sh,
    scene_scale_of,
    set_lr,
    sh_to_rgb,
    visible_box,
)

__all__ = [
    "Attribute",
    "DensifyConfig",
    "Densifier",
    "FLAT_SCALE",
    "GAUSSIAN_KEYS",
    "GaussianConfig",
    "GaussianModel",
    "focus_box",
    "init_splats",
    "initial_points",
    "knn_mean_distance",
    "make_adam",
    "random_points",
    "resize_like",
    "rgb_to_sh",
    "scene_scale_of",
    "set_lr",
    "sh_to_rgb",
    "visible_box",
]

"""Texture sampling for rasterized meshes (UV convention of glTF: (0, 0) is the top-left corner of the image)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_texture(texture: Tensor, uv: Tensor, wrap: bool = True) -> Tensor:
    """Bilinear texture lookup, differentiable w.r.t. ``texture`` and ``uv``.

    Args:
        texture: [H, W, C] texels; row 0 is the top of the image (v = 0).
        uv: [..., 2] texture coordinates; u to the right, v downwards, texel centres at ((i + 0.5) / W, ...).
        wrap: repeat outside [0, 1] (glTF's default sampler); otherwise clamp to the edge.
    Returns:
        [..., C]
    """
    H, W, C = texture.shape
    x = uv[..., 0] * W - 0.5
    y = uv[..., 1] * H - 0.5
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = x0 + 1, y0 + 1
    if wrap:
        x0, x1, y0, y1 = x0 % W, x1 % W, y0 % H, y1 % H
    else:
        x0, x1, y0, y1 = x0.clamp(0, W - 1), x1.clamp(0, W - 1), y0.clamp(0, H - 1), y1.clamp(0, H - 1)
    flat = texture.reshape(H * W, C)
    top = flat[y0 * W + x0] * (1 - fx) + flat[y0 * W + x1] * fx
    bot = flat[y1 * W + x0] * (1 - fx) + flat[y1 * W + x1] * fx
    return top * (1 - fy) + bot * fy


def sample_texture_stack(textures: Tensor, index: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup in one of several same-size textures per sample (per-primitive texture maps).

    u wraps (a closed surface's longitude seam), v is clamped to the edge rows (the poles): bilinear filtering then
    never mixes two textures or the top and bottom of one.

    Args:
        textures: [B, H, W, C].
        index: [M] int64 texture of each sample, in [0, B).
        uv: [M, 2] coordinates as in :func:`sample_texture`.
    Returns:
        [M, C], differentiable w.r.t. ``textures`` and ``uv``.
    """
    B, H, W, C = textures.shape
    x = uv[:, 0] * W - 0.5
    y = (uv[:, 1] * H - 0.5).clamp(0, H - 1)
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0f)[:, None], (y - y0f)[:, None]
    x0 = x0f.long() % W
    x1 = (x0 + 1) % W
    y0 = y0f.long().clamp(0, H - 1)
    y1 = (y0 + 1).clamp(0, H - 1)
    flat = textures.reshape(B * H * W, C)
    base = index * (H * W)
    top = flat[base + y0 * W + x0] * (1 - fx) + flat[base + y0 * W + x1] * fx
    bot = flat[base + y1 * W + x0] * (1 - fx) + flat[base + y1 * W + x1] * fx
    return top * (1 - fy) + bot * fy


def decimate_texture(texture: Tensor, factor: int) -> Tensor:
    """Low-pass a texture: average-pool by ``factor`` and upsample back (bilinear) to its size.

    Args:
        texture: [H, W, C] or [B, H, W, C] (H and W multiples of ``factor``).
    Returns:
        the same shape; ``texture`` itself when ``factor`` <= 1.
    """
    if factor <= 1:
        return texture
    x = texture.movedim(-1, -3).reshape(-1, texture.shape[-1], *texture.shape[-3:-1])
    x = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, factor), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x.movedim(-3, -1).reshape(texture.shape)

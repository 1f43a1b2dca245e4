"""Equirectangular (lat-long) environment maps: lookup, pre-filtering for split-sum shading, importance sampling,
and reading/writing ``.hdr`` / ``.exr`` files.

Convention (Blender-like, +Z up): an environment map is a tensor ``[H, W, 3]`` of *linear* radiance; row 0 is the
zenith (+Z), the last row the nadir; for a unit direction d,

    u = 0.5 - atan2(d_y, d_x) / (2 pi)    (column = u * W, wraps)
    v = acos(d_z) / pi                    (row = v * H)

so the image centre looks along +X. Scenes in another frame pass ``to_env`` ([3, 3] rotation, world -> env) to the
lookup functions instead of re-sampling the map.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.errors import ReconError

__all__ = [
    "dir_to_uv",
    "uv_to_dir",
    "envmap_directions",
    "envmap_solid_angles",
    "sample_envmap",
    "resize_envmap",
    "map_rotation",
    "SplitSumEnv",
    "prepare_split_sum",
    "irradiance_map",
    "EnvSampler",
    "read_envmap",
    "write_envmap",
    "SPLIT_SUM_ROUGHNESS",
    "sample_split_sum_specular",
]


def dir_to_uv(d: Tensor) -> Tensor:
    """Unit directions [..., 3] -> lat-long coordinates [..., 2] in [0, 1] (u wraps)."""
    u = 0.5 - torch.atan2(d[..., 1], d[..., 0]) / (2 * math.pi)
    v = torch.acos(d[..., 2].clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u % 1.0, v], -1)


def uv_to_dir(uv: Tensor) -> Tensor:
    """Lat-long coordinates [..., 2] -> unit directions [..., 3]."""
    phi = (0.5 - uv[..., 0]) * 2 * math.pi
    theta = uv[..., 1] * math.pi
    st = torch.sin(theta)
    return torch.stack([st * torch.cos(phi), st * torch.sin(phi), torch.cos(theta)], -1)


def envmap_directions(height: int, width: int | None = None, device=None, dtype=torch.float32) -> Tensor:
    """Directions through texel centres. Returns [H, W, 3] (W defaults to 2 H)."""
    width = 2 * height if width is None else width
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return uv_to_dir(torch.stack([uu, vv], -1))


def envmap_solid_angles(height: int, width: int | None = None, device=None, dtype=torch.float32) -> Tensor:
    """Exact solid angle of the texels of each row: [H] (they sum to 4 pi over all H x W texels)."""
    width = 2 * height if width is None else width
    edges = torch.arange(height + 1, device=device, dtype=torch.float64) / height * math.pi
    band = torch.cos(edges[:-1]) - torch.cos(edges[1:])
    return (band * (2 * math.pi / width)).to(dtype)


def _rotate(d: Tensor, to_env: Tensor | None) -> Tensor:
    return d if to_env is None else d @ to_env.to(d.dtype).T


def sample_envmap(env: Tensor, dirs: Tensor, to_env: Tensor | None = None, mode: str = "bilinear") -> Tensor:
    """Look up radiance. Differentiable w.r.t. ``env`` (and ``dirs`` in bilinear mode).

    Args:
        env: [H, W, C] lat-long map.
        dirs: [..., 3] unit directions (world frame).
        to_env: optional [3, 3] rotation world -> env frame.
        mode: "bilinear" (wraps in u, clamps in v) or "nearest" (piecewise constant, used by the Monte-Carlo path so
            that its importance sampling pdf matches the integrand exactly).
    Returns:
        [..., C]
    """
    H, W, C = env.shape
    uv = dir_to_uv(_rotate(dirs, to_env))
    flat = env.reshape(H * W, C)
    if mode == "nearest":
        x = (uv[..., 0] * W).long().clamp(0, W - 1)
        y = (uv[..., 1] * H).long().clamp(0, H - 1)
        return flat[y * W + x]
    x = uv[..., 0] * W - 0.5
    y = (uv[..., 1] * H - 0.5).clamp(0, H - 1)
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]
    x0 = x0f.long() % W
    x1 = (x0 + 1) % W
    y0 = y0f.long().clamp(0, H - 1)
    y1 = (y0 + 1).clamp(max=H - 1)
    top = flat[y0 * W + x0] * (1 - fx) + flat[y0 * W + x1] * fx
    bot = flat[y1 * W + x0] * (1 - fx) + flat[y1 * W + x1] * fx
    return top * (1 - fy) + bot * fy


def map_rotation(to_data: Tensor | np.ndarray | None = None, turn_deg: float = 0.0) -> Tensor:
    """``to_env`` [3, 3] (float32) for a map given in the data's frame: directions of a run's normalised frame taken
    back by ``to_data`` (the inverse of the normalisation's rotation; None: the frames agree), then turned by
    ``turn_deg`` degrees about the map's up axis (+Z)."""
    c, s = math.cos(math.radians(turn_deg)), math.sin(math.radians(turn_deg))
    spin = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return spin if to_data is None else spin @ torch.as_tensor(np.asarray(to_data, dtype=np.float32))


def resize_envmap(env: Tensor, height: int) -> Tensor:
    """Solid-angle-weighted box downsampling to [height, 2 height, C] (integer factors), bilinear upsampling."""
    H, W, C = env.shape
    if H == height:
        return env
    x = env.permute(2, 0, 1)[None]
    if H > height and H % height == 0 and W % (2 * height) == 0:
        w = envmap_solid_angles(H, W, device=env.device, dtype=env.dtype)[None, None, :, None]
        num = torch.nn.functional.avg_pool2d(x * w, H // height)
        den = torch.nn.functional.avg_pool2d(w.expand(1, 1, H, W), H // height)
        out = num / den
    else:
        out = torch.nn.functional.interpolate(x, size=(height, 2 * height), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0)


# ----------------------------------------------------------------------------------------------------------------
# split-sum pre-filtering


#: perceptual roughness of the pre-filtered levels; level 0 is the (mirror) map itself. Between levels the
#: specular lookup interpolates linearly in roughness.
SPLIT_SUM_ROUGHNESS = (0.08, 0.25, 0.4, 0.6, 0.8, 1.0)
# (output rows, input rows) for each pre-filtered level: the lobe gets wider, so both resolutions can shrink
_LEVEL_RES = {0.25: (32, 64), 0.4: (16, 64), 0.6: (16, 32), 0.8: (8, 32), 1.0: (8, 32)}


@dataclass
class SplitSumEnv:
    """Pre-integrated environment for split-sum shading (all differentiable w.r.t. the source map).

    Attributes:
        irradiance: [h, 2h, 3] cosine-weighted mean radiance E(n) / pi, so Lambert shading is albedo * irradiance.
        levels: list of [h_k, 2h_k, 3] GGX-prefiltered radiance, one per ``roughness`` entry.
        roughness: the perceptual roughness of each level.
        to_env: optional [3, 3] rotation world -> env frame.
    """

    irradiance: Tensor
    levels: list[Tensor]
    roughness: tuple[float, ...]
    to_env: Tensor | None = None


_KERNEL_CACHE: dict[tuple, Tensor] = {}
_KERNEL_CACHE_MAX = 16


def _kernel_matrix(name: str, out_h: int, in_h: int, kernel, device, dtype, chunk: int = 256) -> Tensor:
    """Row-normalised spherical convolution matrix [out_h * 2 out_h, in_h * 2 in_h]: out = M @ L_in.

    It depends only on the resolutions and the lobe, not on the map, so it is computed once and cached: pre-filtering
    a learnable map every step is then a few small matrix products.
    """
    key = (name, out_h, in_h, str(device), dtype)
    M = _KERNEL_CACHE.get(key)
    if M is None:
        d_in = envmap_directions(in_h, 2 * in_h, device, torch.float64).reshape(-1, 3)
        sa = envmap_solid_angles(in_h, 2 * in_h, device, torch.float64)[:, None].expand(in_h, 2 * in_h).reshape(-1)
        d_out = envmap_directions(out_h, 2 * out_h, device, torch.float64).reshape(-1, 3)
        rows = []
        for s in range(0, d_out.shape[0], chunk):
            k = kernel(d_out[s : s + chunk], d_in) * sa  # [o, i]
            rows.append((k / k.sum(-1, keepdim=True).clamp_min(1e-300)).to(dtype))
        M = torch.cat(rows)
        if len(_KERNEL_CACHE) >= _KERNEL_CACHE_MAX:
            _KERNEL_CACHE.pop(next(iter(_KERNEL_CACHE)))
        _KERNEL_CACHE[key] = M
    return M


def _convolve(env: Tensor, name: str, out_h: int, in_h: int, kernel) -> Tensor:
    """Brute-force spherical convolution of ``env`` (resized to ``in_h`` rows) onto an ``out_h``-row map."""
    src = resize_envmap(env, min(in_h, env.shape[0]))
    M = _kernel_matrix(name, out_h, src.shape[0], kernel, env.device, env.dtype)
    return (M @ src.reshape(-1, src.shape[-1])).view(out_h, 2 * out_h, -1)


def irradiance_map(env: Tensor, out_h: int = 16, in_h: int = 32) -> Tensor:
    """Diffuse pre-convolution: E(n)/pi = (1/pi) * integral L(l) max(n.l, 0) dl. Returns [out_h, 2 out_h, C]."""

    def kernel(o, i):
        return (o @ i.T).clamp_min(0.0)

    # normalising by sum(k) = integral of max(n.l,0) = pi gives exactly E / pi
    return _convolve(env, "cosine", out_h, in_h, kernel)


def _ggx_prefilter(env: Tensor, roughness: float, out_h: int, in_h: int) -> Tensor:
    """GGX lobe convolution with n = v = r (the split-sum assumption), weighted by n.l (Karis 2013)."""
    a2 = max(roughness, 0.08) ** 4

    def kernel(o, i):
        cos_l = o @ i.T  # n.l
        # n.h = cos(half angle between n and l) = sqrt((1 + n.l) / 2)
        nh2 = ((1.0 + cos_l) * 0.5).clamp_min(0.0)
        D = a2 / (math.pi * (nh2 * (a2 - 1.0) + 1.0) ** 2)
        return D * cos_l.clamp_min(0.0)

    return _convolve(env, f"ggx{roughness}", out_h, in_h, kernel)


def prepare_split_sum(env: Tensor, to_env: Tensor | None = None, base_height: int = 128) -> SplitSumEnv:
    """Pre-integrate an environment map for ``recon.render.pbr.shade_split_sum``.

    Costs a few hundred ms on CPU; recompute it whenever a learnable map changes (it is differentiable).

    Args:
        env: [H, W, 3] linear lat-long radiance.
        to_env: optional [3, 3] rotation world -> env frame.
        base_height: rows of the level-0 (mirror) map.
    """
    base = resize_envmap(env, min(base_height, env.shape[0]))
    levels = [base]
    for r in SPLIT_SUM_ROUGHNESS[1:]:
        out_h, in_h = _LEVEL_RES[r]
        levels.append(_ggx_prefilter(env, r, out_h, in_h))
    return SplitSumEnv(irradiance_map(env), levels, SPLIT_SUM_ROUGHNESS, to_env)


def sample_split_sum_specular(light: SplitSumEnv, refl: Tensor, roughness: Tensor) -> Tensor:
    """Pre-filtered radiance along reflection directions [..., 3] for roughness [...] (or [..., 1]) -> [..., 3]."""
    r = roughness.reshape(refl.shape[:-1])
    rs = torch.tensor(light.roughness, device=refl.device, dtype=refl.dtype)
    r = r.clamp(rs[0], rs[-1])
    idx = torch.searchsorted(rs, r.detach().contiguous(), right=True).clamp(1, len(rs) - 1) - 1
    lo, hi = rs[idx], rs[idx + 1]
    t = ((r - lo) / (hi - lo))[..., None]
    out = torch.zeros(*refl.shape[:-1], 3, device=refl.device, dtype=refl.dtype)
    for k in range(len(rs) - 1):
        sel = idx == k
        if not sel.any():
            continue
        a = sample_envmap(light.levels[k], refl[sel], light.to_env)
        b = sample_envmap(light.levels[k + 1], refl[sel], light.to_env)
        out = out.index_put((sel,), a * (1 - t[sel]) + b * t[sel])
    return out


# ----------------------------------------------------------------------------------------------------------------
# importance sampling (Monte-Carlo path)


class EnvSampler:
    """Importance sampling of a lat-long map proportional to luminance x texel solid angle.

    Directions are uniform in solid angle inside the chosen texel (uniform in cos(theta) and phi), so the pdf in
    solid angle is exactly p(texel) / solid_angle(texel) and matches ``sample_envmap(..., mode="nearest")``.

    Args:
        env: [H, W, 3] linear radiance (detached internally; the pdf needs no gradient).
        to_env: optional [3, 3] rotation world -> env frame.
        uniform_mix: fraction of probability spread uniformly, so no direction has zero pdf.
    """

    def __init__(self, env: Tensor, to_env: Tensor | None = None, uniform_mix: float = 0.05):
        env = env.detach()
        H, W, _ = env.shape
        self.H, self.W = H, W
        self.to_env = to_env
        sa = envmap_solid_angles(H, W, env.device, torch.float64)  # [H]
        lum = (env.to(torch.float64) * torch.tensor([0.2126, 0.7152, 0.0722], device=env.device, dtype=torch.float64)).sum(-1)
        w = lum.clamp_min(0) * sa[:, None]
        w = w / w.sum().clamp_min(1e-30)
        u = sa[:, None].expand(H, W) / (4 * math.pi)
        p = (1 - uniform_mix) * w + uniform_mix * u if w.sum() > 0 else u
        self.p_texel = p.to(env.dtype)  # [H, W], sums to 1
        self.sa = sa.to(env.dtype)
        row = p.sum(1)
        self.row_cdf = torch.cumsum(row, 0).to(env.dtype)
        self.col_cdf = torch.cumsum(p / row[:, None].clamp_min(1e-30), 1).to(env.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` world-space directions. Returns (dirs [n, 3], pdf [n] in 1/sr)."""
        dev, dt = self.p_texel.device, self.p_texel.dtype
        xi = torch.rand(n, 4, generator=generator, device="cpu", dtype=torch.float64).to(device=dev, dtype=dt)
        y = torch.searchsorted(self.row_cdf, xi[:, 0].contiguous() * self.row_cdf[-1], right=True).clamp(max=self.H - 1)
        cdf = self.col_cdf[y]
        x = torch.searchsorted(cdf, (xi[:, 1] * cdf[:, -1]).unsqueeze(1).contiguous(), right=True).squeeze(1)
        x = x.clamp(max=self.W - 1)
        c0 = torch.cos(y.to(dt) / self.H * math.pi)
        c1 = torch.cos((y.to(dt) + 1) / self.H * math.pi)
        cos_t = c0 + (c1 - c0) * xi[:, 2]
        u = (x.to(dt) + xi[:, 3]) / self.W
        v = torch.acos(cos_t.clamp(-1, 1)) / math.pi
        d_env = uv_to_dir(torch.stack([u, v], -1))
        d = d_env if self.to_env is None else d_env @ self.to_env.to(dt)
        pdf = self.p_texel[y, x] / self.sa[y]
        return d, pdf

    def pdf(self, dirs: Tensor) -> Tensor:
        """Solid-angle pdf of world directions [..., 3] -> [...]."""
        uv = dir_to_uv(_rotate(dirs, self.to_env))
        x = (uv[..., 0] * self.W).long().clamp(0, self.W - 1)
        y = (uv[..., 1] * self.H).long().clamp(0, self.H - 1)
        return self.p_texel[y, x] / self.sa[y]


# ----------------------------------------------------------------------------------------------------------------
# file I/O


def _read_hdr(path: Path) -> np.ndarray:
    """Radiance RGBE reader (flat and new-style run-length encoded scanlines)."""
    data = path.read_bytes()
    pos = 0
    header = []
    while True:
        end = data.index(b"\n", pos)
        line = data[pos:end].decode("ascii", "replace")
        pos = end + 1
        if line == "":
            break
        header.append(line)
    if not header or not header[0].startswith("#?"):
        raise ReconError("not a Radiance HDR file (missing '#?' signature)", path)
    if any(h.startswith("FORMAT=") and "32-bit_rle_rgbe" not in h for h in header):
        raise ReconError("only 32-bit_rle_rgbe Radiance files are supported", path)
    end = data.index(b"\n", pos)
    m = re.match(r"-Y (\d+) \+X (\d+)", data[pos:end].decode("ascii"))
    if m is None:
        raise ReconError("unsupported HDR orientation (expected '-Y H +X W')", path)
    H, W = int(m.group(1)), int(m.group(2))
    buf = np.frombuffer(data, dtype=np.uint8, offset=end + 1)
    out = np.empty((H, W, 4), dtype=np.uint8)
    p = 0
    for y in range(H):
        if W >= 8 and W < 32768 and buf[p] == 2 and buf[p + 1] == 2 and (int(buf[p + 2]) << 8 | buf[p + 3]) == W:
            p += 4
            for ch in range(4):
                x = 0
                row = out[y, :, ch]
                while x < W:
                    n = int(buf[p])
                    p += 1
                    if n > 128:
                        n -= 128
                        row[x : x + n] = buf[p]
                        p += 1
                    else:
                        row[x : x + n] = buf[p : p + n]
                        p += n
                    x += n
        else:  # flat scanline
            out[y] = buf[p : p + 4 * W].reshape(W, 4)
            p += 4 * W
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)
    return (out[..., :3].astype(np.float64) * scale[..., None]).astype(np.float32)


def _write_hdr(path: Path, img: np.ndarray) -> None:
    """Radiance RGBE writer (flat scanlines; every reader accepts them)."""
    img = np.clip(np.asarray(img, dtype=np.float64)[..., :3], 0.0, None)
    H, W, _ = img.shape
    m = img.max(-1)
    mant, exp = np.frexp(m)
    rgbe = np.zeros((H, W, 4), dtype=np.uint8)
    nz = m > 1e-32
    scale = np.where(nz, mant * 256.0 / np.where(nz, m, 1.0), 0.0)
    rgbe[..., :3] = np.clip(np.round(img * scale[..., None]), 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.where(nz, exp + 128, 0).astype(np.uint8)
    head = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {H} +X {W}\n".encode("ascii")
    path.write_bytes(head + rgbe.tobytes())


def read_envmap(path: str | Path) -> Tensor:
    """Read a lat-long environment map as linear float32 [H, W, 3].

    ``.hdr`` (Radiance RGBE) is decoded here; ``.exr`` goes through imageio, which needs an EXR-capable plugin
    (freeimage, or ``pip install imageio[pyav]`` / OpenEXR builds); without one a ``ReconError`` says so.
    """
    path = Path(path)
    if not path.exists():
        raise ReconError("environment map not found", path)
    suffix = path.suffix.lower()
    if suffix == ".hdr":
        return torch.from_numpy(_read_hdr(path))
    if suffix == ".exr":
        try:
            import imageio.v3 as iio

            img = np.asarray(iio.imread(path), dtype=np.float32)
        except Exception as exc:  # imageio raises various types when no plugin can decode EXR
            raise ReconError(
                f"cannot read OpenEXR ({type(exc).__name__}: {exc}); convert it to .hdr or install an EXR plugin "
                "for imageio (e.g. `imageio_download_bin freeimage`)",
                path,
            ) from exc
        return torch.from_numpy(img[..., :3].copy())
    raise ReconError(f"unsupported environment map format {suffix!r} (use .hdr or .exr)", path)


def write_envmap(path: str | Path, env: Tensor | np.ndarray) -> Path:
    """Write a linear [H, W, 3] map as ``.hdr`` (always available) or ``.exr`` (needs an imageio EXR plugin)."""
    path = Path(path)
    img = env.detach().cpu().numpy() if isinstance(env, Tensor) else np.asarray(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".hdr":
        _write_hdr(path, img)
    elif suffix == ".exr":
        try:
            import imageio.v3 as iio

            iio.imwrite(path, img.astype(np.float32))
        except Exception as exc:
            raise ReconError(
                f"cannot write OpenEXR ({type(exc).__name__}: {exc}); write .hdr instead or install an EXR plugin "
                "for imageio",
                path,
            ) from exc
    else:
        raise ReconError(f"unsupported environment map format {suffix!r} (use .hdr or .exr)", path)
    return path

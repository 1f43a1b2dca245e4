"""Images, videos and plots that people look at: renders, colour-mapped depth, training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_uint8(image) -> np.ndarray:
    """[H, W, C] float in [0, 1] (tensor or array) -> uint8 array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(image, path: Path) -> None:
    """Write an [H, W, 1|3|4] float image in [0, 1] as PNG (or JPEG by suffix)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = to_uint8(image)
    if img.shape[-1] == 1:
        img = img[..., 0]
    iio.imwrite(path, img)


def colormap(values, vmin: float | None = None, vmax: float | None = None, name: str = "turbo", mask=None) -> torch.Tensor:
    """Map a scalar image [H, W, 1] to RGB [H, W, 3] with a matplotlib colormap (percentile range by default)."""
    import matplotlib

    v = values.detach().float().cpu()[..., 0] if isinstance(values, torch.Tensor) else torch.as_tensor(values)[..., 0]
    valid = torch.isfinite(v) if mask is None else (torch.as_tensor(mask)[..., 0] > 0.5) & torch.isfinite(v)
    if valid.any():
        vals = v[valid]
        lo = float(torch.quantile(vals, 0.01)) if vmin is None else vmin
        hi = float(torch.quantile(vals, 0.99)) if vmax is None else vmax
    else:
        lo, hi = 0.0, 1.0
    t = ((v - lo) / max(hi - lo, 1e-8)).clamp(0, 1).numpy()
    rgb = matplotlib.colormaps[name](t)[..., :3]
    rgb[~valid.numpy()] = 0.0
    return torch.from_numpy(rgb.astype(np.float32))


class VideoWriter:
    """An H.264 MP4 written frame by frame (frames are [H, W, 3] floats in [0, 1]; odd sizes are padded to even
    numbers for the encoder). Use as a context manager; ``frames`` counts what was written."""

    def __init__(self, path: Path, fps: float = 24):
        import imageio.v2 as iio2

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._writer = iio2.get_writer(self.path, fps=fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_log_level="error")

    def append(self, frame) -> None:
        img = to_uint8(frame)
        h, w = img.shape[:2]
        self._writer.append_data(np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(frames: Sequence, path: Path, fps: float = 24) -> None:
    """Write [H, W, 3] float frames as an H.264 MP4 (sizes padded to even numbers for the encoder)."""
    with VideoWriter(path, fps) as w:
        for f in frames:
            w.append(f)


def plot_curves(history: list[dict], path: Path) -> None:
    """Training curves (loss and PSNR against step) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    keys = [k for k in ("loss", "psnr", "num_gaussians") if k in history[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), dpi=100)
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        ax.plot(steps, [h[k] for h in history])
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
        if k == "loss":
            ax.set_yscale("log")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

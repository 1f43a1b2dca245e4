"""Figures of how a Swift4D run treats the moving part, for docs/: tracking and the static/dynamic split.

    python scripts/swift4d_figures.py RUN [RUN ...] --labels before after --out docs/images/swift4d

Writes ``<out>_tracking.jpg``: the test camera at a few times, ground truth then each run's render (from the runs'
end-of-training renders in RUN/renders/test, written by ``recon train``), and ``<out>_split.png`` for the last
run: the histogram of the per-Gaussian dynamic score d with the threshold ζ, one training camera's change mask
(the d-score stage's target) and the share of its Gaussians that the field deforms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tile(path: Path, upscale: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) halves of an evaluation image, upscaled by pixel repetition."""
    import imageio.v3 as iio

    im = iio.imread(path)[..., :3]
    w = im.shape[1] // 2
    up = lambda a: np.repeat(np.repeat(a, upscale, 0), upscale, 1)  # noqa: E731
    return up(im[:, :w]), up(im[:, w:])


def tracking_figure(runs: list[Path], labels: list[str], frames: list[int], out: Path, upscale: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["ground truth", *labels]
    fig, axes = plt.subplots(len(frames), len(cols), figsize=(2.1 * len(cols), 2.1 * len(frames)), dpi=100, squeeze=False)
    for r, frame in enumerate(frames):
        tiles = [_tile(run / "renders" / "test" / f"{frame:05d}.png", upscale) for run in runs]
        images = [tiles[0][1]] + [t[0] for t in tiles]
        for c, img in enumerate(images):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"frame {frame}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, pil_kwargs={"quality": 85})
    plt.close(fig)


def split_figure(run: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recon.engine.run import load_run

    loaded = load_run(run, device="cpu")
    m = loaded.method
    d = m.splats["d"].detach().numpy()
    dyn = m.dynamic().numpy()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.0), dpi=100)
    ax = axes[0]
    ax.hist(np.clip(d, -30, 60), bins=90, color="tab:blue", log=True)
    ax.axvline(m.zeta, color="tab:red", ls="--", label=f"ζ = {m.zeta:g}")
    ax.set_xlabel("dynamic score d (clipped to [-30, 60])")
    ax.set_ylabel("Gaussians")
    ax.set_title(f"{dyn.mean():.1%} of {len(d)} Gaussians deformed", fontsize=9)
    ax.legend(fontsize=8)
    masks = m._masks or {}
    if masks:
        view = sorted(masks)[0]
        img = loaded.scene.image_rgb(view)
        mask = masks[view].cpu().numpy()
        shown = img * 0.35 + 0.65 * np.where(mask[..., None], np.array([1.0, 0.2, 0.2]), img)
        axes[1].imshow(np.clip(shown, 0, 1))
        axes[1].set_title(f"change mask of training view {view} (red: {mask.mean():.1%})", fontsize=9)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--labels", nargs="+")
    ap.add_argument("--frames", nargs="+", type=int, default=[6, 12, 18, 23])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "swift4d")
    args = ap.parse_args()
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("error: give one label per run")
    for run in args.runs:
        if not (run / "renders" / "test").is_dir():
            raise SystemExit(f"error: {run}: no renders/test (train with evaluation at the end)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tracking_figure(args.runs, labels, args.frames, Path(f"{args.out}_tracking.jpg"))
    split_figure(args.runs[-1], Path(f"{args.out}_split.png"))
    print(f"wrote {args.out}_tracking.jpg and {args.out}_split.png")


if __name__ == "__main__":
    main()

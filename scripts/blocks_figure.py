"""A picture of a Blocks World run for the docs: per test view, the image | the textured blocks | each block in its
own colour | normals, one row per view.

    .venv/bin/python scripts/blocks_figure.py RUN docs/images/blocks_solids.png --views 2 --width 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--views", type=int, default=2, help="number of test views (spread over the split)")
    p.add_argument("--width", type=int, default=256, help="width of each panel in pixels")
    args = p.parse_args()

    import imageio.v3 as iio
    from PIL import Image

    from recon.engine.run import load_run

    run = load_run(args.run, device="cpu")
    scene, method = run.scene, run.method
    test = scene.split("test")
    picks = test[np.linspace(0, len(test) - 1, args.views).round().astype(int)]
    bg = torch.tensor(scene.background, dtype=torch.float32)
    rows = []
    for i in picks:
        cam = scene.cameras[int(i):int(i) + 1]
        out = method.render(cam, outputs=("rgb", "blocks", "normal"), background=bg)
        panels = [scene.image_rgb(int(i)), *(out[k].cpu().numpy() for k in ("rgb", "blocks", "normal"))]
        h = round(panels[0].shape[0] * args.width / panels[0].shape[1])
        rows.append(np.concatenate([np.asarray(Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)).resize((args.width, h), Image.LANCZOS))
                                    for x in panels], 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.concatenate(rows, 0))
    print(f"wrote {args.out} (image | textured blocks | blocks | normals; test views {', '.join(str(int(i)) for i in picks)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

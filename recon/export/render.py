"""``recon render``: a run's split views or a camera path, written as PNGs (per output) and an MP4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from recon.cameras import Cameras, camera_focus, orbit_poses
from recon.errors import ReconError
from recon.io.images import colormap, save_image, write_video


def orbit_cameras(template: Cameras, train_c2w: torch.Tensor, n: int) -> Cameras:
    """``n`` cameras on a circle through the training cameras' mean height, looking at their common focus.

    The circle lies in the plane orthogonal to the cameras' average up vector, at the mean distance from the focus;
    intrinsics are those of ``template`` (one camera).
    """
    c2w = train_c2w.double().cpu().numpy()
    centers = c2w[:, :3, 3]
    up = -c2w[:, :3, 1].mean(0)  # OpenCV y points down
    up /= np.linalg.norm(up)
    focus = camera_focus(c2w)
    rel = centers - focus
    height = float((rel @ up).mean())
    radius = float(np.linalg.norm(rel - np.outer(rel @ up, up), axis=1).mean())
    # First pose above the first training camera; distance and elevation put the circle at that radius and height.
    poses = orbit_poses(n, float(np.hypot(radius, height)), float(np.degrees(np.arctan2(height, radius))),
                        target=focus, up=up, start=rel[0])
    k = lambda t: t.expand(n).clone()  # noqa: E731
    return Cameras(
        camtoworlds=torch.as_tensor(poses, dtype=torch.float32),
        fx=k(template.fx), fy=k(template.fy), cx=k(template.cx), cy=k(template.cy),
        widths=k(template.widths), heights=k(template.heights),
        models=torch.zeros(n, dtype=torch.int64), distortion=torch.zeros(n, 6), times=None,
    )


def _to_rgb(name: str, value: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    if value.shape[-1] == 3:
        return value.clamp(0, 1) if name != "normal" else (value * 0.5 + 0.5).clamp(0, 1)
    return colormap(value, mask=alpha)


@torch.no_grad()
def render_run(run, split: str | None = None, path: str | None = None, frames: int = 60, time_sweep: bool = False, output: Path | None = None,
               outputs=("rgb",), fps: int = 24, console: Console | None = None) -> Path:
    """Render and write images; returns the output folder."""
    console = console or Console(stderr=True)
    method = run.method
    bad = [o for o in outputs if o not in method.render_outputs]
    if bad:
        raise ReconError(f"method {method.name!r} cannot render {bad} (it offers: {', '.join(method.render_outputs)})")
    if time_sweep and not method.is_dynamic:
        raise ReconError(f"--time-sweep needs a dynamic method; {method.name!r} is static")
    scene = run.scene
    cams_all = scene.cameras.to(method.device_)
    bg = torch.tensor(scene.background, dtype=torch.float32, device=method.device_)
    if path == "orbit":
        train = torch.from_numpy(scene.split("train"))
        cams = orbit_cameras(scene.cameras[int(train[0])], scene.cameras.camtoworlds[train], frames).to(method.device_)
        times = np.linspace(0, 1, frames) if time_sweep else [None] * frames
        name = "orbit-time" if time_sweep else "orbit"
    elif time_sweep:
        idx = int(scene.split("test" if "test" in scene.splits else "train")[0])
        cams = cams_all[[idx] * frames]
        times = np.linspace(0, 1, frames)
        name = "time-sweep"
    else:
        split = split or ("test" if "test" in scene.splits else "train")
        idx = scene.split(split)
        cams = cams_all[torch.from_numpy(idx)]
        times = [None if cams.times is None else float(t) for t in (cams.times if cams.times is not None else [None] * len(idx))]
        name = split
    folder = Path(output) if output else run.run_dir / "renders" / name
    video: dict[str, list] = {o: [] for o in outputs}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"render {name}", total=len(cams))
        for i in range(len(cams)):
            t = None if times[i] is None else float(times[i])
            want = tuple(dict.fromkeys(list(outputs) + (["alpha"] if "alpha" in method.render_outputs else [])))
            out = method.render(cams[i], time=t, outputs=want, background=bg)
            for o in outputs:
                img = _to_rgb(o, out[o], out.get("alpha"))
                save_image(img, folder / o / f"{i:05d}.png")
                video[o].append(img.cpu())
            progress.advance(task)
    for o, imgs in video.items():
        if len(imgs) > 1:
            write_video(imgs, folder / f"{o}.mp4", fps=fps)
    console.print(f"recon: wrote {len(cams)} frames × {len(outputs)} outputs to {folder}")
    return folder

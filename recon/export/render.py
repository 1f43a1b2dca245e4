"""``recon render``: a run's split views, an orbit or a camera path, written as PNGs and MP4s.

Camera paths (``--camera-path FILE``, nerfstudio's ``camera_path.json`` format, see :mod:`recon.camera_path`) give
one MP4 with the requested outputs side by side, PNG frames on request. The orbit (``--path orbit``) is a generated
path rendered by the same loop; split views and the orbit keep writing PNGs and one MP4 per output.
"""

from __future__ import annotations

import sys
import time as _time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recon.camera_path import CameraPath, Keyframe, PathFrames, dataparser_transform, orbit_path, read_camera_path
from recon.camera_path.path import fov_from_focal
from recon.cameras import Cameras
from recon.errors import ReconError
from recon.io.images import VideoWriter, colormap, save_image


def _to_rgb(name: str, value: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    if value.shape[-1] == 3:
        return value.clamp(0, 1) if name != "normal" else (value * 0.5 + 0.5).clamp(0, 1)
    return colormap(value, mask=alpha)


def load_path_frames(run, file: Path, resolution=None, fps: float | None = None, seconds: float | None = None,
                     transform: Path | None = None, console: Console | None = None) -> tuple[PathFrames, int, int, float]:
    """The cameras of a camera path file in the run's normalised frame: (frames, width, height, fps).

    The file's poses are in the run's data frame (recon writes them so), or in nerfstudio's dataparser frame when
    ``transform`` names its ``dataparser_transforms.json``. The file's own sampled cameras are rendered as they are;
    ``fps`` or ``seconds`` different from the file's re-sample the path from its keyframes.
    """
    pf = read_camera_path(file)
    width, height = resolution if resolution is not None else (pf.width, pf.height)
    if width is None or height is None:
        raise ReconError("the camera path has no render_width / render_height; give --resolution WIDTH HEIGHT", file)
    if width < 1 or height < 1:
        raise ReconError(f"--resolution must be positive, got {width} {height}")
    file_fps = pf.fps or (pf.path.fps if pf.path else 24.0)
    resample = pf.frames is None or (fps is not None and fps != pf.fps) or (seconds is not None and seconds != pf.seconds)
    fps = float(fps or file_fps)
    if resample:
        path = pf.path
        if path is None:  # only sampled cameras: take them as keyframes of a Catmull-Rom path
            f = pf.frames
            ks = [Keyframe(f.camtoworlds[i], float(f.fovs[i]), None if f.times is None else float(f.times[i])) for i in range(len(f))]
            path = CameraPath(ks, seconds=len(f) / file_fps)
            path.check(file)
        if seconds is not None and not seconds > 0:
            raise ReconError(f"--seconds must be positive, got {seconds:g}")
        if not fps > 0:
            raise ReconError(f"--fps must be positive, got {fps:g}")
        frames = replace(path, fps=fps, seconds=float(seconds or path.seconds)).frames()
    else:
        frames = pf.frames
    to_data = dataparser_transform(transform).invert_camtoworlds if transform is not None else (lambda c2w: c2w)
    frames = frames.mapped(lambda c2w: run.transform.apply_camtoworlds(to_data(c2w)))
    return frames, int(width), int(height), fps


class _Ticker:
    """Progress with an ETA: a rich bar on a terminal, or one plain line per frame (``lines``: for logs and for
    the viewer, which reads them)."""

    def __init__(self, console: Console, total: int, label: str, style: str):
        self.total, self.label, self.done = total, label, 0
        self.lines = style == "lines"
        self.t0 = _time.perf_counter()
        self.progress = None
        if not self.lines:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total)
        return self

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress.advance(self.task)
            return
        per = (_time.perf_counter() - self.t0) / self.done
        print(f"recon render: frame {self.done}/{self.total} {per:.2f} s/frame eta {per * (self.total - self.done):.0f} s", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


@torch.no_grad()
def render_frames(method, cams: Cameras, times, outputs, background: torch.Tensor, folder: Path, *, fps: float,
                  png: bool, combined: str | None, console: Console, label: str, progress: str = "bar", render_fn=None) -> int:
    """Render every camera of ``cams`` (at ``times[i]``) and write the frames.

    Args:
        cams: N cameras on the method's device.
        times: N scene times (None entries for static scenes).
        png: write ``folder/<output>/<i>.png``.
        render_fn: ``(camera, time, outputs, background) -> outputs`` instead of ``method.render`` (relighting).
        combined: write one MP4 ``folder/<combined>.mp4`` with the outputs side by side; None: one MP4 per output
            (``folder/<output>.mp4``; only when there are at least two frames).

    Returns:
        the number of frames written.
    """
    want = tuple(dict.fromkeys(list(outputs) + (["alpha"] if "alpha" in method.render_outputs else [])))
    videos: dict[str, VideoWriter] = {}
    n = len(cams)
    try:
        if combined is not None:
            videos["all"] = VideoWriter(folder / f"{combined}.mp4", fps)
        elif n > 1:
            videos = {o: VideoWriter(folder / f"{o}.mp4", fps) for o in outputs}
        with _Ticker(console, n, f"render {label}", progress) as ticker:
            for i in range(n):
                t = None if times[i] is None else float(times[i])
                if render_fn is None:
                    out = method.render(cams[i], time=t, outputs=want, background=background)
                else:
                    out = render_fn(cams[i], t, want, background)
                imgs = [_to_rgb(o, out[o], out.get("alpha")).cpu() for o in outputs]
                for o, img in zip(outputs, imgs):
                    if png:
                        save_image(img, folder / o / f"{i:05d}.png")
                    if o in videos:
                        videos[o].append(img)
                if "all" in videos:
                    videos["all"].append(torch.cat(imgs, dim=1))
                ticker.advance()
    finally:
        for v in videos.values():
            v.close()
    return n


def render_run(run, split: str | None = None, path: str | None = None, frames: int = 60, time_sweep: bool = False, output: Path | None = None,
               outputs=("rgb",), fps: float | None = None, console: Console | None = None, camera_path: Path | None = None,
               resolution: tuple[int, int] | None = None, seconds: float | None = None, png: bool = False,
               transform: Path | None = None, progress: str = "bar", envmap: torch.Tensor | None = None, env_rotation: float = 0.0,
               env_name: str = "env") -> Path:  # fmt: skip
    """Render and write images; returns the output folder. With ``envmap`` [He, We, 3] (linear lat-long in the data's
    frame, +Z up) the frames are relit under it, turned by ``env_rotation`` degrees about its up axis (methods with
    the relight capability); the folder name gets ``-<env_name>``."""
    console = console or Console(stderr=True)
    method = run.method
    render_fn = None
    if envmap is not None:
        if not method.supports("relight"):
            raise ReconError(f"method {method.name!r} cannot relight: --env needs a method with the relight capability")
        from recon.render.envmap import map_rotation

        to_env = map_rotation(run.transform.rotation.T, env_rotation).to(method.device_)
        env = envmap.to(method.device_).float()

        def render_fn(cam, t, outs, background):
            return method.relight(cam, env, to_env=to_env, time=t, outputs=outs, background=background)
    bad = [o for o in outputs if o not in method.render_outputs]
    if bad:
        raise ReconError(f"method {method.name!r} cannot render {bad} (it offers: {', '.join(method.render_outputs)})")
    if time_sweep and not method.is_dynamic:
        raise ReconError(f"--time-sweep needs a dynamic method; {method.name!r} is static")
    if camera_path is not None and path is not None:
        raise ReconError("give either --camera-path or --path, not both")
    scene = run.scene
    dev = method.device_
    bg = torch.tensor(scene.background, dtype=torch.float32, device=dev)
    combined = None
    if camera_path is not None:
        pf, w, h, fps = load_path_frames(run, Path(camera_path), resolution, fps, seconds, transform, console)
        cams = pf.cameras(w, h).to(dev)
        times = [None] * len(pf) if pf.times is None else list(pf.times)
        if method.is_dynamic and pf.times is None:
            console.print(f"recon: {camera_path} has no render_time; rendering the dynamic scene at time 0", highlight=False, markup=False)
            times = [0.0] * len(pf)
        elif not method.is_dynamic:
            times = [None] * len(pf)  # a static method has no time to follow
        name = combined = Path(camera_path).stem
    elif path == "orbit":
        train = scene.split("train")
        first = int(train[0])
        w, h = (int(scene.cameras.widths[first]), int(scene.cameras.heights[first])) if resolution is None else resolution
        sweep = np.linspace(0, 1, frames) if time_sweep else None
        orbit = orbit_path(scene.cameras.camtoworlds[torch.from_numpy(train)].double().numpy(), fov_from_focal(float(scene.cameras.fy[first]), float(scene.cameras.heights[first])), frames, sweep)
        cams = orbit.cameras(w, h).to(dev)
        times = list(sweep) if time_sweep else [None] * frames
        name = "orbit-time" if time_sweep else "orbit"
        png = True
    elif time_sweep:
        idx = int(scene.split("test" if "test" in scene.splits else "train")[0])
        cams = scene.cameras.to(dev)[[idx] * frames]
        times = list(np.linspace(0, 1, frames))
        name = "time-sweep"
        png = True
    else:
        split = split or ("test" if "test" in scene.splits else "train")
        idx = scene.split(split)
        cams = scene.cameras.to(dev)[torch.from_numpy(idx)]
        times = [None] * len(idx) if cams.times is None else [float(t) for t in cams.times]
        name = split
        png = True
    if envmap is not None:
        name = f"{name}-{env_name}"
    folder = Path(output) if output else run.run_dir / "renders" / name
    n = render_frames(method, cams, times, outputs, bg, folder, fps=float(fps or 24), png=png, combined=combined, console=console, label=name,
                      progress=progress, render_fn=render_fn)  # fmt: skip
    what = f"{folder / combined}.mp4 ({', '.join(outputs)} side by side)" if combined else str(folder)
    console.print(f"recon: wrote {n} frames × {len(outputs)} outputs to {what}", highlight=False, markup=False)
    return folder

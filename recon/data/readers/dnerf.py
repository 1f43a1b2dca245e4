"""D-NeRF: the Blender layout (``transforms_{train,val,test}.json``) with a per-frame ``time`` in [0, 1].

Times are kept as the files give them (the shared dnerf_lego train split spans 0.16-0.95 while val spans 0-1, so
re-normalising per split would shift them). Auto-detected when the training frames carry ``time``.
"""

from __future__ import annotations

from pathlib import Path

from recon.data.readers.blender import frames_have_time, load_blender, split_file
from recon.data.readers.common import LoadOptions
from recon.data.scene import SceneData

NAME = "dnerf"
DESCRIPTION = "D-NeRF (Blender layout with per-frame time)"
LOOKS_FOR = "transforms_train.json with per-frame 'time'"
OPTIONS = ()  # reader-specific keyword options of load_scene


def detect(path: Path) -> bool:
    root = path.parent if path.is_file() else path
    return split_file(root, "train").is_file() and frames_have_time(root)


def load(path: Path, opts: LoadOptions) -> SceneData:
    return load_blender(path, opts, dynamic=True)

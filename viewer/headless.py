"""A browser without a browser: a websocket client that speaks viser's protocol, for tests and benchmarks that need
several clients at once (``scripts/bench_viewer.py --clients``) or a client that vanishes mid-render.

It reports a camera and a canvas size like the web page does, clicks buttons and sets controls by label, and
records the background images (the server's renders) and the markdown it receives. It does not draw anything.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


def decode_window(raw: bytes) -> list[dict]:
    """The messages of one server -> client packet (viser 1.x: decompressed and compressed lengths as little-endian
    uint64, a zstd msgpack payload, then raw binary buffers, not needed here)."""
    import msgspec
    import zstandard

    size, csize = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(raw[16 : 16 + csize], max_output_size=size)
    return msgspec.msgpack.decode(inner)["messages"]


def encode(message) -> bytes:
    """A client -> server packet: one message as msgpack."""
    import msgspec

    return msgspec.msgpack.encode(message.as_serializable_dict())


class HeadlessClient:
    """``async with HeadlessClient(port) as c: await c.look(c2w); await c.next_frame()``.

    Attributes:
        frames: arrival times (``time.perf_counter()``) of the background images received.
        last_image: the encoded bytes (JPEG or PNG) of the latest background image, or None.
        buttons: button label -> viser uuid, from the GUI the server sent.
        controls: label -> viser uuid of every other labelled control (sliders, dropdowns, checkboxes, ...); a label
            used twice keeps the latest.
        markdown: every markdown content received, in order.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", canvas: tuple[int, int] = (1024, 768)):
        self.url = f"ws://{host}:{port}"
        self.canvas = canvas
        self.frames: list[float] = []
        self.last_image: bytes | None = None
        self.buttons: dict[str, str] = {}
        self.controls: dict[str, str] = {}
        self.markdown: list[str] = []
        self._got: asyncio.Event | None = None
        self._ws = None
        self._rx = None
        self._aborted = False

    async def __aenter__(self) -> "HeadlessClient":
        import viser
        import websockets.asyncio.client as wsc

        self._got = asyncio.Event()
        self._ws = await wsc.connect(self.url, subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self._rx = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc) -> None:
        self._rx.cancel()
        if not self._aborted:
            await self._ws.close()

    async def _receive(self) -> None:
        async for raw in self._ws:
            for m in decode_window(raw):
                kind = str(m.get("type"))
                if kind == "BackgroundImageMessage" and m.get("rgb_data") is not None:
                    self.frames.append(time.perf_counter())
                    self.last_image = bytes(m["rgb_data"])
                    self._got.set()
                elif kind == "GuiButtonMessage":
                    self.buttons[m["props"]["label"]] = m["uuid"]
                elif kind.startswith("Gui") and isinstance(m.get("props"), dict) and isinstance(m["props"].get("label"), str) and "uuid" in m:
                    self.controls[m["props"]["label"]] = m["uuid"]
                elif kind == "GuiMarkdownMessage":
                    self.markdown.append(m["props"]["_markdown"])
                elif kind == "GuiUpdateMessage" and isinstance(m.get("updates", {}).get("_markdown"), str):
                    self.markdown.append(m["updates"]["_markdown"])

    async def look(self, camtoworld: np.ndarray, fov: float = 0.8, up=(0.0, 0.0, 1.0)) -> None:
        """Report a camera: OpenCV camera-to-world [4, 4], vertical fov in radians."""
        from viser import _messages as vm

        from recon.rotations import rotmat_to_quat

        c2w = np.asarray(camtoworld, dtype=np.float64)
        q = rotmat_to_quat(c2w[:3, :3])
        target = c2w[:3, 3] + c2w[:3, 2]
        msg = vm.ViewerCameraMessage(tuple(float(v) for v in q), tuple(float(v) for v in c2w[:3, 3]), float(fov), 0.01, 100.0,
                                     self.canvas[1], self.canvas[0], tuple(float(v) for v in target), tuple(float(v) for v in up))
        await self._ws.send(encode(msg))

    async def click(self, label: str) -> bool:
        """Click the button labelled ``label`` (False when the server has not sent it)."""
        from viser import _messages as vm

        if label not in self.buttons:
            return False
        await self._ws.send(encode(vm.GuiUpdateMessage(self.buttons[label], {"value": True})))
        return True

    async def set(self, label: str, value) -> bool:
        """Set the control labelled ``label`` to ``value``, as a person would in the page (False when the server has
        not sent it)."""
        from viser import _messages as vm

        if label not in self.controls:
            return False
        await self._ws.send(encode(vm.GuiUpdateMessage(self.controls[label], {"value": value})))
        return True

    async def next_frame(self, timeout: float = 10.0) -> bool:
        """Wait for the next background image (True) or the timeout (False)."""
        self._got.clear()
        try:
            await asyncio.wait_for(self._got.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def abort(self) -> None:
        """Vanish: close the TCP connection without a websocket goodbye (a tab killed, a network gone)."""
        self._aborted = True
        self._rx.cancel()
        self._ws.transport.abort()

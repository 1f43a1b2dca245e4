"""Starting the viser server: a free port, the URL to open and how to reach it over SSH."""

from __future__ import annotations

import contextlib
import io
import socket

from rich.console import Console


def start_server(host: str, port: int, console: Console, label: str = "recon"):
    """Start a ``viser.ViserServer`` on ``host``, on ``port`` or the next free port (saying so), and print the URL.

    viser itself walks to the next port when one is taken; we only report which one it bound. viser prints its own
    banner on stdout, which belongs to the CLI (``recon train`` prints the run directory there for scripts), so it
    is swallowed and replaced by our lines on ``console``.
    """
    import viser

    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
    bound = server.get_port()
    if bound != port:
        console.print(f"[yellow]viewer[/]: port {port} is in use; using {bound}")
    print_access(console, host, bound)
    return server


def print_access(console: Console, host: str, port: int) -> None:
    """The URL to open, and the SSH port forward to use when the viewer runs on a remote machine."""
    local = host in ("127.0.0.1", "localhost", "::1")
    shown = "localhost" if local or host in ("0.0.0.0", "::", "") else host
    console.print(f"[bold]viewer[/]: open [link=http://{shown}:{port}]http://{shown}:{port}[/link] in a browser")
    machine = socket.gethostname()
    console.print(
        f"[dim]viewer: on a remote machine, forward the port first:  ssh -L {port}:localhost:{port} {machine}  "
        f"then open http://localhost:{port} locally[/dim]"
    )


def stop_server(server) -> None:
    """Stop viser without its "Server stopped" line on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        server.stop()

"""python -m backpack_dist.serve --checkpoint PATH [--port 8000] [--host 127.0.0.1]"""

from __future__ import annotations

import dataclasses
import errno
import socket
import sys

from .. import cli
from ..eval.options import resolve_device
from ..senses.words import SenseToolError


def listen_error(host: str, port: int, e: OSError) -> str:
    """What went wrong when binding (host, port), and which flag fixes it."""
    if isinstance(e, socket.gaierror):
        return f"cannot resolve --host {host} ({e.strerror}): pass an address of this machine such as 127.0.0.1"
    if e.errno == errno.EADDRNOTAVAIL:
        return (f"--host {host} is not an address of this machine: pass 127.0.0.1 (this machine only) or 0.0.0.0 "
                "(every interface)")
    if e.errno == errno.EACCES and 0 < port < 1024:
        return f"port {port} needs root: pick one from 1024 to 65535 with --port"
    if e.errno == errno.EADDRINUSE:
        return f"port {port} is in use on {host}: pick another with --port (0 picks a free one)"
    return f"cannot listen on {host}:{port} ({e.strerror or e}): check --host and --port"


def _bind(model, tokenizer, host: str, port: int, info: dict, quiet: bool):
    from .server import make_server

    try:
        return make_server(model, tokenizer, host, port, info, quiet=quiet)
    except OSError as e:  # only the bind raises OSError here: name the flag that fixes it
        raise ValueError(listen_error(host, port, e)) from None


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    checkpoint: str = ""
    """The Backpack to serve: an exported model, a run directory or one of its checkpoints (required)."""
    port: int = 8000
    """The port to listen on (0 picks a free one)."""
    host: str = "127.0.0.1"
    """The address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for every interface."""
    device: str | None = None
    """cpu, cuda or cuda:N; default: the GPU when there is one."""
    quiet: bool = False
    """Do not log each request."""

    def __post_init__(self):
        if not self.checkpoint:
            raise cli.UsageError("no checkpoint given: pass --checkpoint PATH (an exported model or a run directory)")
        cli.check_range(self, "port", 0, 65535)


def serve(options: ServeOptions) -> None:
    """Serve the sense page for a Backpack checkpoint (export dir, run dir or checkpoint dir) until Ctrl-C."""
    from ..pretrained import load_pretrained

    try:
        device = resolve_device(options.device)
        model, tokenizer, info = load_pretrained(options.checkpoint, device)
        server = _bind(model, tokenizer, options.host, options.port, info, options.quiet)
    except (SenseToolError, ValueError) as e:
        raise cli.UsageError(str(e)) from None
    address, bound_port = server.server_address[:2]
    print(f"serving {options.checkpoint} at http://{address}:{bound_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cli.run(serve, argv, name="python -m backpack_dist.serve")


if __name__ == "__main__":
    main()

"""python -m backpack_dist.serve --checkpoint PATH [--port 8000] [--host 127.0.0.1]"""

from __future__ import annotations

import errno
import socket
import sys

from fire.decorators import SetParseFn

from .. import cli
from ..eval.options import int_option, resolve_device
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


# Text flags stay text: fire would read --host 127.1 as a number.
@SetParseFn(str, "checkpoint", "host", "device")
def serve(checkpoint=None, port: int = 8000, host: str = "127.0.0.1", device=None, quiet: bool = False):
    """Serve the sense page for a Backpack checkpoint (export dir, run dir or checkpoint dir) until Ctrl-C."""
    from ..pretrained import load_pretrained

    try:
        if checkpoint is None:
            raise SenseToolError("no checkpoint given: pass --checkpoint PATH (an exported model or a run directory)")
        port = int_option(port, "--port", low=0, high=65535)
        device = resolve_device(device)
        model, tokenizer, info = load_pretrained(str(checkpoint), device)
        server = _bind(model, tokenizer, str(host), port, info, bool(quiet))
    except (SenseToolError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    address, bound_port = server.server_address[:2]
    print(f"serving {checkpoint} at http://{address}:{bound_port}/ (Ctrl-C to stop)", flush=True)
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

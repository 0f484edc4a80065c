"""python -m backpack_dist.serve --checkpoint PATH [--port 8000] [--host 127.0.0.1]"""

from __future__ import annotations

import sys

import torch

from .. import cli
from ..senses.words import SenseToolError


def serve(checkpoint=None, port: int = 8000, host: str = "127.0.0.1", device=None, quiet: bool = False):
    """Serve the sense page for a Backpack checkpoint (export dir, run dir or checkpoint dir) until Ctrl-C."""
    from ..pretrained import load_pretrained
    from .server import make_server

    try:
        if checkpoint is None:
            raise SenseToolError("no checkpoint given: pass --checkpoint PATH (an exported model or a run directory)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer, info = load_pretrained(str(checkpoint), device)
        server = make_server(model, tokenizer, str(host), int(port), info, quiet=bool(quiet))
    except (SenseToolError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port} ({e.strerror}): pick another with --port", file=sys.stderr)
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
    cli.run(serve, argv, name="python -m backpack_dist.serve")


if __name__ == "__main__":
    main()

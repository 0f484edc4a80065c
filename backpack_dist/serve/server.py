"""The HTTP side of the sense page: the standard library's ThreadingHTTPServer serving one HTML
page and a small JSON API.

  GET  /              the page
  GET  /api/info      model name, number of senses, context length
  POST /api/predict   {"text", "token_scales"?: {token id: [k factors]}, "top"?} -> tokens, predictions
  POST /api/senses    {"id": token id} or {"word": "nurse"}, "top"?, "relative"? -> each sense's top words
                      (relative: ranked by the difference from the token's mean sense)

Errors come back as {"error": message} with status 400 (bad request) or 500.
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ..senses.words import SenseToolError
from .api import SenseService

MAX_BODY = 1 << 20


def page_html() -> bytes:
    return resources.files(__package__).joinpath("page.html").read_bytes()


def make_handler(service: SenseService, quiet: bool = False):
    page = page_html()
    routes = {"/api/predict": service.predict, "/api/senses": service.senses}

    class Handler(BaseHTTPRequestHandler):
        server_version = "backpack-senses"

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data) -> None:
            # allow_nan=False: NaN is not JSON (the page could not parse it); a 500 names the problem instead
            self._send(status, json.dumps(data, allow_nan=False).encode(), "application/json; charset=utf-8")

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(HTTPStatus.OK, service.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page at {path}"})

        def do_POST(self):  # noqa: N802
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no API at {self.path}"})
            header = self.headers.get("Content-Length") or "0"
            if not header.strip().isdigit():
                return self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad Content-Length {header[:40]!r}: expected "
                                                                    "the body's size in bytes"})
            length = int(header)
            if length > MAX_BODY:
                return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(payload, dict):
                    raise SenseToolError("the request body must be a JSON object")
                self._json(HTTPStatus.OK, route(payload))
            except json.JSONDecodeError as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"the request body is not JSON: {e}"})
            except SenseToolError as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            except Exception as e:  # keep serving; tell the page what went wrong
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})

        def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
            if not quiet:
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 8000, info: dict | None = None,
                quiet: bool = False) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (see server.server_address)."""
    service = SenseService(model, tokenizer, info)
    server = ThreadingHTTPServer((host, port), make_handler(service, quiet))
    server.daemon_threads = True
    return server

"""A web page to explore a Backpack's senses: `python -m backpack_dist.serve --checkpoint PATH`."""

from .api import SenseService
from .server import make_server

__all__ = ["SenseService", "make_server"]

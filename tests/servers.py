"""A real uvicorn server in a thread on a free loopback port, for tests of HTTP code: the
library's own :func:`densereward.adapters.server.serving`."""

from __future__ import annotations

from densereward.adapters.server import serving as running

__all__ = ["running"]

"""Starting Ray the one way densereward does: quiet, and for a private instance, watched.

``densereward run`` and ``densereward label`` both start Ray here. Without an address they get a
new private instance (``address="local"``: never one a ``ray start`` left on this machine) and a
watcher process (``core.ray_watch``) that stops the instance if the driver dies without shutting
it down; with one, they join that cluster. Either way a failure to start or reach Ray is one
``ConfigError`` naming ``--ray-address``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from densereward.core.errors import ConfigError


def start_ray(address: str | None) -> None:
    """``ray.init`` for ``address`` (``None``: a private local instance on every CPU)."""
    import ray

    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local, single-user instance
        _watch(os.getpid())
    else:
        check_reachable(address)
    try:
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            ignore_reinit_error=True,
            num_cpus=None if address else os.cpu_count(),
        )
    except (ConnectionError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError("--ray-address", f"cannot start or reach Ray: {first}") from None


def _watch(driver: int) -> None:
    """Started before ``ray.init``, so a driver killed while Ray starts is covered too."""
    subprocess.Popen(
        [sys.executable, "-m", "densereward.core.ray_watch", str(driver)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def check_reachable(address: str) -> None:
    """A ``host:port`` that nothing listens on fails here, in seconds: ``ray.init`` would wait
    for it indefinitely."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "/" in host:
        return  # "auto", "ray://...", "local": Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError("--ray-address", f"nothing answers at {address} ({error})") from None

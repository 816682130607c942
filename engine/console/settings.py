"""What `sigmatch console` was started with: one frozen Settings the pages read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["Settings", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Settings:
    """The console's settings.

    config: the live configuration file (CONFIG); versions are written to it when approved.
    data: the console's own directory: `console.db` (SQLite) and nothing else of the engine's.
    host, port: where the console listens (127.0.0.1 unless told otherwise).
    daemon_pid: a file holding the pid of a running `sigmatch run` to SIGHUP after an apply.
    trace_dir: the recorded traces a draft can be simulated on.
    out: the live service's output directory (its stats.json feeds the figures).
    lookup, lookup_token: the service's lookup (`http://HOST:PORT`) and its bearer token.
    metrics: the service's Prometheus metrics URL.
    simulations: simulations run at once (each holds two engines in memory).
    """
    config: Path
    data: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    daemon_pid: Optional[Path] = None
    trace_dir: Optional[Path] = None
    out: Optional[Path] = None
    lookup: Optional[str] = None
    lookup_token: Optional[str] = None
    metrics: Optional[str] = None
    simulations: int = 1

    @property
    def database(self) -> Path:
        """The SQLite file of users, versions, approvals, the audit trail and simulations."""
        return self.data / "console.db"

    @property
    def url(self) -> str:
        """The address a browser opens (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

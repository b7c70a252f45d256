"""The local stack's ports: defaults where free, any free port where not, or the ones asked
for (`clef stack up --port NAME=PORT`); every one on 127.0.0.1."""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields

from clef_core.common.errors import ClefError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    prefect: int = 4200
    mlflow: int = 5000
    ray: int = 6380
    ray_dashboard: int = 8265
    ray_client: int = 10001
    # Ray's dashboard agent serves HTTP on a fixed default port; named here so that a caller
    # choosing free ports for the others cannot pick it for one of them by chance.
    ray_agent: int = 52365

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def port_free(port: int, reuse_addr: bool = False) -> bool:
    """Nothing listens on 127.0.0.1:`port` (and it can be bound now; with `reuse_addr`, as a
    server binding with SO_REUSEADDR can: connections left in TIME_WAIT do not count)."""
    with socket.socket() as s:
        if reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port


def choose_ports(asked: dict[str, int] | None = None) -> Ports:
    """The ports asked for (each must be free), else the default where free, else a free one."""
    asked = dict(asked or {})
    unknown = sorted(set(asked) - set(Ports.names()))
    if unknown:
        raise ClefError(
            f"unknown port name {', '.join(unknown)}; expected one of {', '.join(Ports.names())}"
        )
    if len(set(asked.values())) < len(asked):
        raise ClefError(f"the same port asked for twice: {asked}")
    for name, port in asked.items():
        if not port_free(port):
            raise ClefError(f"port {name}={port} is in use on {HOST}; pick another or leave it out")
    chosen: dict[str, int] = {}
    for name in Ports.names():
        default = getattr(Ports(), name)
        taken = set(asked.values()) | set(chosen.values())
        if name in asked:
            chosen[name] = asked[name]
        elif default not in taken and port_free(default):
            chosen[name] = default
        else:
            chosen[name] = _any_free_port(taken)
    return Ports(**chosen)


def parse_ports(items: list[str]) -> dict[str, int]:
    """`--port NAME=PORT` items as a dict (one clear message for a malformed one)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit() or not 0 < int(value) < 65536:
            raise ClefError(f"expected --port NAME=PORT (e.g. mlflow=5001), got {item!r}")
        out[name.strip()] = int(value)
    return out

"""A free TCP port for a component the tests start (API server, etcd, Prometheus, an agent's
metrics), outside the kernel's ephemeral range.

Binding port 0 asks the kernel for a free port from its ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), the same range it draws the
source port of every outgoing connection from. Between picking such a port and the component
binding it (seconds for a kube-apiserver, after its certificates are written), a client's
connection can take it: a CI run failed with kube-apiserver's "bind: address already in use" while
another process was downloading packages. Ports below that range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
"""the lowest port picked: above the well-known and most registered service ports"""


def ephemeral_port_range() -> tuple[int, int]:
    """(low, high) of the kernel's ephemeral ports; Linux's default where it cannot be read."""
    try:
        low, high = (int(x) for x in _RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now, chosen at random below the ephemeral range (or above
    it where too little room is left below); the kernel's choice (port 0) if 200 tries find
    none. Raises OSError only if even that fails."""
    low, high = ephemeral_port_range()
    span = (_LOWEST, low - 1) if low - _LOWEST >= 1000 else (high + 1, 65535)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(*span)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]

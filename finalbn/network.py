"""Whether a host answers, asked without ever waiting long on the network.

Compute nodes are often air-gapped: a download (ImageNet weights, full MNIST)
is tried only when its host answers within a few seconds, and otherwise the
caller names the prefetch command in a UserError. Shared by finalbn.models and
finalbn.data, which do not import each other.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0


def can_reach(host: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether an HTTPS connection to host (or the configured proxy) opens in time."""
    address = _https_address(host)
    opened: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout_s):
                opened.append(True)
        except OSError:
            opened.append(False)

    # The socket timeout does not bound the DNS lookup, which on an
    # air-gapped node can stall for tens of seconds; the thread's join does.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return opened == [True]


def _https_address(host: str) -> tuple[str, int]:
    # urllib downloads through an https proxy when one is set, so that proxy,
    # not the host, is what has to answer.
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 80
    return host, 443

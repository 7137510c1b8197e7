"""Whether an address a server binds stays on this machine: the web's key check (web.auth) and
Flower's login check (autodep_celery.flower_guard) decide by it. Imports the stdlib only."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback IPs (127.0.0.0/8, ::1); False for "" (every
    interface), 0.0.0.0, ::, other addresses and any other host name (it may resolve
    anywhere)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

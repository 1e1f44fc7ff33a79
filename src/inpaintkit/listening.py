"""The address a front end (`ui`, `serve`) listens on: checked before the slow model load."""

from __future__ import annotations

import ipaddress
import socket

from .errors import InputError


def check_can_listen(host: str, port: int) -> None:
    """Refuse an address this process cannot listen on before the (slow) model load, in one sentence."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
            probe.bind(address)
    except OSError as error:
        raise InputError(
            f"Cannot serve on {host}:{port} ({error.strerror or error}); pass another --port or --host."
        ) from None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach the address (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Loaded at start-up by any Python process whose PYTHONPATH starts with this folder: every attempt to reach
the network (connect, sendto, name lookups) raises OSError and is appended to $NO_NETWORK_LOG, so a test can
prove a command never tried; each process that armed the guard appends its pid to $NO_NETWORK_LOG.armed. Unix sockets stay allowed (they do not leave the machine)."""

import os
import socket
import sys

_LOG = os.environ.get("NO_NETWORK_LOG")
_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo"}


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS:
        return
    on_socket = event in ("socket.connect", "socket.sendto", "socket.sendmsg")
    if on_socket and args and getattr(args[0], "family", None) == socket.AF_UNIX:
        return
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {event} {(args[1:] if on_socket else args)!r}\n")
    raise OSError(f"network access blocked in this test: {event}")


sys.addaudithook(_hook)
if _LOG:  # proof that the guard was armed in this process (an unarmed run proves nothing)
    with open(_LOG + ".armed", "a", encoding="utf-8") as _fh:
        _fh.write(f"{os.getpid()}\n")

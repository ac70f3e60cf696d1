"""Serve apps.app with uvicorn on 127.0.0.1, on a port the OS chooses; print it first.

Run inside the cell as ``python tests/wire/serve.py``.  The socket is bound and listening
before the port is printed, so the host can connect at once: its first request waits in the
backlog until uvicorn accepts.  The first stdout line is JSON: the port, uvicorn's version and
the interface.  uvicorn's own API changed across releases, so the options are passed only
where the installed release accepts them, and the socket is handed over the way it accepts:
``Server.run(sockets=...)`` (0.5 on), ``Config(sockets=...)`` (0.4) or ``run(fd=...)`` (0.3;
0.4's own ``fd`` path is broken).

The pure-Python protocol (h11) and the stdlib event loop are asked for everywhere, so that a
compiled speed-up present in one cell and missing in another is not a difference between
cells.

The host stops the server when its run ends.  Should the host itself die first (killed, not
interrupted), the server must not outlive it: a watchdog thread ends the process once its
parent is gone or ``BGMATRIX_WIRE_LIFETIME`` seconds have passed.  Python 3.8+.
"""
import inspect
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import apps  # noqa: E402  (after the path: apps lives beside this file)
import uvicorn  # noqa: E402

OPTIONS = {
    "http": "h11",
    "loop": "asyncio",
    "log_level": "warning",
    "access_log": False,
    "lifespan": "off",
    "interface": apps.INTERFACE,
}


def watchdog(parent, lifetime):
    """End this process when the host that started it is gone, or after ``lifetime`` s."""
    deadline = time.monotonic() + lifetime
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(3)


def accepted(func, options):
    params = inspect.signature(func).parameters
    return {k: v for k, v in options.items() if k in params}


def announce(port, how):
    line = {"port": port, "uvicorn": getattr(uvicorn, "__version__", None),
            "interface": apps.INTERFACE, "handover": how}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main():
    lifetime = float(os.environ.get("BGMATRIX_WIRE_LIFETIME", "120"))
    threading.Thread(target=watchdog, args=(os.getppid(), lifetime), daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server_cls = getattr(uvicorn, "Server", None)
    config_cls = getattr(uvicorn, "Config", None)
    if server_cls and config_cls:
        options = accepted(config_cls.__init__, OPTIONS)
        if "sockets" in inspect.signature(server_cls.run).parameters:
            config = config_cls(apps.app, **options)
            announce(port, "sockets")
            server_cls(config).run(sockets=[sock])
            return
        if "sockets" in inspect.signature(config_cls.__init__).parameters:
            config = config_cls(apps.app, sockets=[sock], **options)
            announce(port, "config-sockets")
            server_cls(config).run()
            return
    announce(port, "fd")
    uvicorn.run(apps.app, fd=sock.fileno(), **accepted(uvicorn.run, OPTIONS))


if __name__ == "__main__":
    main()

"""Serve apps.app on 127.0.0.1 with the server named by ``BGMATRIX_WIRE_SERVER``; print the
port first.

Run inside the cell as ``python tests/wire/serve.py``.  The first stdout line is JSON: the
port, the server and its version, the ASGI interface and how the socket was handed over.

- ``uvicorn`` (the default) and ``uvicorn-fast``: the socket is bound and listening before the
  port is printed, so the host can connect at once.  uvicorn's API changed across releases, so
  options are passed only where the installed release accepts them, and the socket is handed
  over the way it accepts: ``Server.run(sockets=...)`` (0.5 on), ``Config(sockets=...)`` (0.4)
  or ``run(fd=...)`` (0.3; 0.4's own ``fd`` path is broken).  ``uvicorn`` asks for the
  pure-Python protocol (h11) and the stdlib loop in every cell, so that a compiled speed-up
  present in one cell and missing in another is not a difference between cells;
  ``uvicorn-fast`` asks for httptools and uvloop, what ``uvicorn[standard]`` deploys.
- ``hypercorn``, ``granian``, ``daphne``: they bind their own socket, to a port the OS chose
  for a socket this process opened and closed just before (``handover: "port"``).  The host
  waits for ``/ping`` in every case, so a server that is not yet listening is waited for,
  never raced.  granian and daphne speak ASGI 3 only: an ASGI 2 app (Starlette before 0.12) is
  served through the same two-line adapter uvicorn applies itself (``interface: asgi2``).

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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import apps  # noqa: E402  (after the path: apps lives beside this file)

SERVER = os.environ.get("BGMATRIX_WIRE_SERVER", "uvicorn")

UVICORN_OPTIONS = {
    "http": "httptools" if SERVER == "uvicorn-fast" else "h11",
    "loop": "uvloop" if SERVER == "uvicorn-fast" else "asyncio",
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


def announce(port, how, version):
    line = {"port": port, "server": SERVER, "version": version, "uvicorn": None,
            "interface": apps.INTERFACE, "handover": how}
    if SERVER.startswith("uvicorn"):
        line["uvicorn"] = version
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def asgi3_app():
    """The app as an ASGI 3 callable, for servers that only call those."""
    if apps.INTERFACE == "asgi3":
        return apps.app

    async def adapter(scope, receive, send):
        await apps.app(scope)(receive, send)

    return adapter


def free_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def serve_uvicorn():
    import uvicorn

    version = getattr(uvicorn, "__version__", None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn's own bind does: the connections the server closes first (a task's error
    # ends one) wait in TIME_WAIT, which must not keep the port from the next listener.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server_cls = getattr(uvicorn, "Server", None)
    config_cls = getattr(uvicorn, "Config", None)
    if server_cls and config_cls:
        options = accepted(config_cls.__init__, UVICORN_OPTIONS)
        if "sockets" in inspect.signature(server_cls.run).parameters:
            config = config_cls(apps.app, **options)
            announce(port, "sockets", version)
            server_cls(config).run(sockets=[sock])
            return
        if "sockets" in inspect.signature(config_cls.__init__).parameters:
            config = config_cls(apps.app, sockets=[sock], **options)
            announce(port, "config-sockets", version)
            server_cls(config).run()
            return
    announce(port, "fd", version)
    uvicorn.run(apps.app, fd=sock.fileno(), **accepted(uvicorn.run, UVICORN_OPTIONS))


def serve_hypercorn():
    import asyncio

    import hypercorn
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    try:
        from importlib.metadata import version as dist_version
        version = dist_version("hypercorn")
    except Exception:
        version = getattr(hypercorn, "__version__", None)
    port = free_port()
    config = Config()
    config.bind = ["127.0.0.1:%d" % port]
    config.accesslog = None
    config.loglevel = "WARNING"
    announce(port, "port", version)
    asyncio.run(serve(apps.app, config))


def serve_granian():
    from importlib.metadata import version as dist_version

    from granian import Granian

    port = free_port()
    # Its worker imports the target by name: this folder on the path, one worker, so that
    # "the request in flight" stays one process's value (apps.py).
    os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
    params = inspect.signature(Granian.__init__).parameters
    options = {"address": "127.0.0.1", "port": port, "interface": "asgi", "workers": 1}
    if "log_enabled" in params:
        options["log_enabled"] = False
    target = "serve:asgi3_target" if apps.INTERFACE == "asgi2" else "apps:app"
    announce(port, "port", dist_version("granian"))
    Granian(target, **{k: v for k, v in options.items() if k in params}).serve()


def serve_daphne():
    from importlib.metadata import version as dist_version

    from daphne.server import Server

    port = free_port()
    endpoint = "tcp:port=%d:interface=127.0.0.1" % port
    announce(port, "port", dist_version("daphne"))
    Server(application=asgi3_app(), endpoints=[endpoint], signal_handlers=True,
           verbosity=0).run()


SERVE = {
    "uvicorn": serve_uvicorn,
    "uvicorn-fast": serve_uvicorn,
    "hypercorn": serve_hypercorn,
    "granian": serve_granian,
    "daphne": serve_daphne,
}


def main():
    lifetime = float(os.environ.get("BGMATRIX_WIRE_LIFETIME", "120"))
    threading.Thread(target=watchdog, args=(os.getppid(), lifetime), daemon=True).start()
    SERVE[SERVER]()


if __name__ == "__main__":
    main()
else:  # imported by granian's worker as ``serve:asgi3_target``
    asgi3_target = asgi3_app()

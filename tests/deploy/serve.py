"""Serve tests/wire/apps.py exactly as wire mode does, plus one thing deployment mode varies:
the server's graceful-shutdown option.

Run inside the cell as ``python tests/deploy/serve.py``.  Everything but the option is
tests/wire/serve.py (its first stdout line, its watchdog, how each server is started), imported
rather than copied, so the two modes serve the same apps the same way; wire mode's files are
not edited, so its method hash (bgmatrix/run/wire.py ``wire_hash``) stays what it was.

``BGMATRIX_DEPLOY_GRACEFUL`` (seconds), when set, is passed to the server's graceful-shutdown
option.  Before serving, the launcher writes ``graceful.json`` into ``BGMATRIX_WIRE_DIR``: the
option's name and default as the installed server declares them (its signature or its config
class: found by looking, never by version), and the value set, or null where the server has no
such option.  Python 3.8+.
"""
import functools
import inspect
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "wire"))

import serve  # noqa: E402  (tests/wire/serve.py, which imports apps beside it)

GRACEFUL = os.environ.get("BGMATRIX_DEPLOY_GRACEFUL")


def seconds(text):
    """Whole seconds as an int (uvicorn declares its option ``int``), otherwise a float."""
    value = float(text)
    return int(value) if value == int(value) else value


def _default(params, name):
    found = params[name].default
    return None if found is inspect.Parameter.empty else found


def uvicorn_option(value):
    """uvicorn: ``Config(timeout_graceful_shutdown=...)``, when its Config takes it."""
    import uvicorn

    config = getattr(uvicorn, "Config", None)
    params = inspect.signature(config.__init__).parameters if config else {}
    if "timeout_graceful_shutdown" not in params:
        return {"option": None}
    if value is not None:
        serve.UVICORN_OPTIONS["timeout_graceful_shutdown"] = value
    return {"option": "timeout_graceful_shutdown",
            "default": _default(params, "timeout_graceful_shutdown")}


def hypercorn_option(value):
    """hypercorn: ``Config.graceful_timeout`` (a class attribute every Config starts with)."""
    from hypercorn.config import Config

    if not hasattr(Config, "graceful_timeout"):
        return {"option": None}
    default = Config.graceful_timeout
    if value is not None:
        Config.graceful_timeout = value
    return {"option": "graceful_timeout", "default": default}


def keyword_option(cls, names, value):
    """The first of ``names`` that ``cls.__init__`` takes, its default, and, when ``value`` is
    given, ``cls.__init__`` wrapped to pass it (serve.py reads the signature of what it calls:
    ``functools.wraps`` keeps it readable through ``__wrapped__``)."""
    params = inspect.signature(cls.__init__).parameters
    found = [name for name in names if name in params]
    if not found:
        return {"option": None}
    name, original = found[0], cls.__init__
    if value is not None:
        @functools.wraps(original)
        def init(self, *args, **kwargs):
            kwargs.setdefault(name, value)
            original(self, *args, **kwargs)

        cls.__init__ = init
    return {"option": name, "default": _default(params, name)}


def granian_option(value):
    """granian: ``Granian(workers_kill_timeout=...)``, how long the main process waits for a
    worker to stop before it kills it."""
    from granian import Granian

    return keyword_option(Granian, ("workers_kill_timeout",), value)


def daphne_option(value):
    """daphne: its Server has had no graceful-shutdown option (``application_close_timeout``
    applies after a client disconnects, and a stop cancels every application instance); a
    release that adds one under one of these names is measured with it."""
    from daphne.server import Server

    names = ("graceful_timeout", "shutdown_timeout", "timeout_graceful_shutdown")
    return keyword_option(Server, names, value)


OPTIONS = {
    "uvicorn": uvicorn_option,
    "uvicorn-fast": uvicorn_option,
    "hypercorn": hypercorn_option,
    "granian": granian_option,
    "daphne": daphne_option,
}


def main():
    value = seconds(GRACEFUL) if GRACEFUL else None
    found = OPTIONS[serve.SERVER](value)
    found["set"] = value if found["option"] else None
    with open(os.path.join(serve.apps.WIRE_DIR, "graceful.json"), "w") as fh:
        json.dump(found, fh, sort_keys=True)
    serve.main()


if __name__ == "__main__":
    main()

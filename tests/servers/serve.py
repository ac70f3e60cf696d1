"""Serve the probe app (tests/servers/apps.py) exactly as wire mode serves its apps.

Run inside the cell as ``python tests/servers/serve.py``.  Everything about starting a server
(the first stdout line, the watchdog, each server's options and socket hand-over) is
tests/wire/serve.py, imported rather than copied, so a probe sees the server configured as the
wire evidence it explains; wire mode's files are not edited, so its method hash
(bgmatrix/run/wire.py ``wire_hash``) stays what it was.  The probe app is registered as
``apps`` before wire mode's launcher imports that name, and the launcher's folder is pointed
here, because granian's worker imports ``apps:app`` by name from that folder.  Python 3.8+.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import apps  # noqa: E402  (the probe app, bound to the name wire mode's launcher imports)

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "wire"))

import serve  # noqa: E402  (tests/wire/serve.py; finds ``apps`` already imported)

serve.HERE = HERE


def choose_interface():
    """Servers too old for ASGI 3 call every app as ASGI 2, found by looking at what the
    installed release has, never by its version: a uvicorn that cannot be told the interface
    (before 0.7), a hypercorn whose typing names no ASGI 3 (before 0.6)."""
    import inspect

    if serve.SERVER.startswith("uvicorn"):
        import uvicorn
        config = getattr(uvicorn, "Config", None)
        if config is None or "interface" not in inspect.signature(config.__init__).parameters:
            apps.app = apps.asgi2
    elif serve.SERVER == "hypercorn":
        import hypercorn.typing
        # ASGI 3 came with ``ASGI3Framework`` (0.6); 0.14 names ASGI 3 ``ASGIFramework`` beside
        # ``WSGIFramework``.  Neither name: the release calls ``app(scope)``.
        if not any(hasattr(hypercorn.typing, n) for n in ("ASGI3Framework", "WSGIFramework")):
            apps.app = apps.asgi2


if __name__ == "__main__":
    choose_interface()
    serve.main()

"""Which framework this cell measures.

The host sets ``BGMATRIX_KIND`` to ``starlette`` for pure-Starlette cells.  Everywhere else
FastAPI must import: a release that cannot be imported is an ``import-error`` cell, never a
run whose FastAPI tests were quietly skipped.
"""
import os

import pytest


def starlette_only():
    return os.environ.get("BGMATRIX_KIND") == "starlette"


def require_fastapi():
    """Import FastAPI for a FastAPI-level test module, or skip it in a Starlette-only cell."""
    if starlette_only():
        pytest.skip("FastAPI-level tests do not run in a Starlette-only cell",
                    allow_module_level=True)
    import fastapi  # an ImportError here fails collection, on purpose

    return fastapi

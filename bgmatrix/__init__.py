"""bgmatrix: the spec, test matrix and compatibility site for background tasks in FastAPI and
Starlette.  Host-side tools (Python 3.11+); the in-cell suite lives in tests/spec/."""

__version__ = "0.1.0"

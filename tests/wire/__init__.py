"""Wire mode: the spec's clauses re-observed through a real ASGI server on loopback.

apps.py and serve.py run inside a cell (Python 3.8+, the cell's framework and a period-correct
uvicorn); the host side that drives them with httpx is bgmatrix/wire.py.
"""

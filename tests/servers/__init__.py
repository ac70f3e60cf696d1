"""Server probes: plain ASGI apps that measure how a server delivers the protocol
(bgmatrix/run/probe.py).  Not collected by pytest."""

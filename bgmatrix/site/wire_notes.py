"""Measured observations shown on clause pages: how the wire-mode labels differ from the raw ones.

The spec states requirements only (spec/index.md, "Releases"), so these paragraphs, first
written by hand into spec 0.1.0 as "*On the wire.*", live here since spec 0.2.0. Each is a
measured observation about one clause, keyed by its ID, and the site shows it on that clause's
page beside the generated release line. The text is kept as it was written.
"""

from __future__ import annotations

WIRE_NOTES: dict[str, str] = {
    'EXEC-1': (
        "One measured label difference, Starlette 0.36.0's file case: its `FileResponse` "
        'reads `scope["extensions"]`, which neither the raw harness nor the uvicorn of '
        'that date provides, so it raises `KeyError` after `http.response.start` on both '
        'sources. Neither the final body nor the task happens; the raw label names the '
        'missing task first (`no-task`), the wire label the missing body (`no-body`). '
        'Same verdict, same failure.'
    ),
    'MW-1': (
        'Over a real connection (wire mode: the period-correct uvicorn on 127.0.0.1 and '
        'an httpx client) a release that holds back only the final, empty body message '
        'delivers every byte of a response with a Content-Length at once, so the client '
        'sees `response:after-body` where the raw log says `before-body`; a chunked '
        'streaming response has its final chunk held and the client does wait '
        '(`stream:before-body`). The verdict agrees on both sources; the label difference '
        'is this transport effect, not a harness fault.'
    ),
    'MW-2': (
        'uvicorn answers `http.disconnect` as soon as the response is complete, so the '
        "wire's `keep-open` case pairs with the raw `after-response` case and "
        '`close-after-read` with `after-all-bytes`; nothing on the wire corresponds to '
        '`withheld`. Where the raw harness labels a task `outlived-app` (it cancels the '
        'orphaned task when it closes its event loop), uvicorn lets it finish; the '
        'verdict stays `deviates`, since no server tracks that task and a shutdown drops '
        'it.'
    ),
}

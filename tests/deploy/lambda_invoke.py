"""Invoke tests/wire/apps.py once through Mangum, the way AWS Lambda calls a handler.

Run inside the cell as ``python tests/deploy/lambda_invoke.py RUN PATH`` with Mangum on
``PYTHONPATH`` and ``BGMATRIX_WIRE_DIR`` set.  The event is an API Gateway HTTP API (payload
format 2.0) event for ``GET PATH?run=RUN``; the context carries the attributes Lambda's Python
runtime gives a handler.  When the handler returns, ``handler-returned`` is appended to the
effect log (after every effect of the request's tasks that had happened by then), and one JSON
line is printed: the status code and body length of the handler's response.  Python 3.8+.
"""
import inspect
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "wire"))

import serve  # noqa: E402  (tests/wire/serve.py: the app as an ASGI 3 callable)
from mangum import Mangum  # noqa: E402

apps = serve.apps


def http_api_event(path, query):
    """An API Gateway HTTP API v2 event, as Lambda delivers it for ``GET path?query``."""
    host = "r3pmxmplak.execute-api.us-east-1.amazonaws.com"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "*/*",
            "content-length": "0",
            "host": host,
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-6745f1a0-3c0f1d2e4b5a69788a9b0c1d",
            "x-forwarded-for": "203.0.113.9",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "queryStringParameters": dict(p.split("=", 1) for p in query.split("&") if "=" in p),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "r3pmxmplak",
            "domainName": host,
            "domainPrefix": "r3pmxmplak",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "02/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1796212800000,
        },
        "isBase64Encoded": False,
    }


class LambdaContext:
    """What Lambda's Python runtime passes as ``context`` (the attributes adapters read)."""

    function_name = "bgmatrix-deploy"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bgmatrix-deploy"
    memory_limit_in_mb = 128
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/bgmatrix-deploy"
    log_stream_name = "2026/12/02/[$LATEST]abcdef"

    def get_remaining_time_in_millis(self):
        return 30000


def handler():
    options = {}
    if "lifespan" in inspect.signature(Mangum.__init__).parameters:
        options["lifespan"] = "off"  # apps.py has nothing to start, as in wire mode
    return Mangum(serve.asgi3_app(), **options)


def main():
    run, path = sys.argv[1], sys.argv[2]
    response = handler()(http_api_event(path, "run=" + run), LambdaContext())
    apps.effect("handler-returned", kind="marker", run=run, origin=run)
    body = response.get("body") or ""
    sys.stdout.write(json.dumps({"status": response.get("statusCode"), "body": len(body)}) + "\n")


if __name__ == "__main__":
    main()

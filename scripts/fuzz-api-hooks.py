"""schemathesis hooks for scripts/fuzz-api.

POST /v1/events takes NDJSON (one event a line) besides JSON; schemathesis
has no serializer for it, so each generated event is sent as one line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    return (json.dumps(value) + "\n").encode()

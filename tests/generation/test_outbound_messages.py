"""What a run's error keeps of a server's 400 (issue 27): its status and the first line of the
server's own message, whatever shape the server answers in; never a traceback or a page."""

from __future__ import annotations

import pytest

from generation.engine.outbound import failure_summary

TRACE = 'Traceback (most recent call last):\n  File "/srv/app.py", line 3'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # OpenAI's shape, and vLLM's (message at the top level).
        ({"error": {"message": "prompt is too long\n" + TRACE}}, "HTTP 400: prompt is too long"),
        (
            {"object": "error", "message": "max_tokens must be at least 1", "code": 400},
            "HTTP 400: max_tokens must be at least 1",
        ),
        # FastAPI: a string detail, and a validation error's list.
        ({"detail": "Model not found"}, "HTTP 400: Model not found"),
        (
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            "HTTP 400: field required",
        ),
        # A plain-text body (the openai client hands it over as a string).
        (
            "context length exceeded: 4096 > 2048\n" + TRACE,
            "HTTP 400: context length exceeded: 4096 > 2048",
        ),
        # Nothing worth showing: a traceback, an HTML page, nothing.
        (TRACE, "HTTP 400"),
        ("<html><body><h1>400 Bad Request</h1></body></html>", "HTTP 400"),
        (None, "HTTP 400"),
    ],
)
def test_the_servers_first_line_is_kept_with_the_status(body, expected):
    assert failure_summary(400, body) == expected

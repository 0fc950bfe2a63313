"""What the worker sends to a served model, and where: the one place every request to a server
goes through (generation, judging, grading, evolution and benchmark runs alike). No Django.

Three rules, each enforced here so that no caller can forget it:

- **The key is the row's.** A request carries ``Bearer <value of the variable the model names>``,
  or ``Bearer none`` when the model names none. Nothing a client library reads from the worker's
  environment by itself (``OPENAI_API_KEY``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
  ``OPENAI_CUSTOM_HEADERS``, proxies, ``.netrc``) reaches the server: the transport rebuilds
  each request's headers from a short list and sets the authorisation itself.
- **Only allowed hosts.** ``ENDPOINT_ALLOWED_HOSTS`` (host names, and IP addresses or networks in
  CIDR form) says where a served model may point. A name that is not listed is resolved and every
  address it resolves to must lie in a listed network, so a DNS name that points at a forbidden
  address is refused. The check runs when a model is saved and again before every request.
- **No redirects, short errors.** A 3xx is a failure, never followed (a POST must not turn into
  a request to a second URL). What a failed request leaves for staff is its status and the
  first line of the server's own error message, bounded; never the body or a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The key sent when a model names no variable: servers that need none accept any.
NO_KEY = "none"
NO_API_KEY = "the environment variable {var} (the API key of this endpoint) is not set"
# For a fresh demo and the tests (``transformers serve`` on 127.0.0.1); production sets its own.
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.0/8", "::1")
ANY_HOST = "*"
HOST_NOT_ALLOWED = (
    "endpoint host {host!r} is not allowed{why}; ENDPOINT_ALLOWED_HOSTS lists where served "
    "models may point ({allowed})"
)
RESOLVES_TO = " (it resolves to {address})"
DOES_NOT_RESOLVE = " (it does not resolve)"
REDIRECT_REFUSED = "HTTP {status}: the server redirected the request; redirects are not followed"
HTTP_ERROR = "HTTP {status}{message}"
NO_CONNECTION = "could not connect ({kind})"
TIMED_OUT = "timed out"
# How much of a server's own error message a run keeps.
MESSAGE_CHARS = 300
# The headers a request to a server may carry; every other one is dropped (Authorization is
# set here). The SDK's own ``x-stainless-*`` headers say only which client asked.
SENT_HEADERS = frozenset(
    {
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "content-type",
        "content-length",
        "user-agent",
        "idempotency-key",
    }
)


class HostNotAllowed(ValueError):
    """The endpoint's host is outside ENDPOINT_ALLOWED_HOSTS; the message says why."""


def api_key(api_key_env: str) -> str:
    """The key a request to this model carries: the value of the variable the model names, or
    ``NO_KEY`` when it names none (ValueError, naming the variable, when it is not set)."""
    if not api_key_env:
        return NO_KEY
    key = os.environ.get(api_key_env, "")
    if not key:
        raise ValueError(NO_API_KEY.format(var=api_key_env))
    return key


# --- where -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    anything: bool = False
    text: str = ""

    @classmethod
    def of(cls, entries: Iterable[str]) -> HostPolicy:
        """From ENDPOINT_ALLOWED_HOSTS: host names (``.example.com`` for a domain and its
        sub-domains), IP addresses and CIDR networks; ``*`` allows any host."""
        entries = [e.strip().lower() for e in entries if e and e.strip()]
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.removeprefix("*"))
        return cls(frozenset(names), tuple(networks), ANY_HOST in entries, ", ".join(entries))

    def _named(self, host: str) -> bool:
        return host in self.names or any(
            n.startswith(".") and (host.endswith(n) or host == n[1:]) for n in self.names
        )

    def _address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, url: str, *, resolve: Callable[[str, int], list[str]] | None = None) -> None:
        """HostNotAllowed unless ``url``'s host is allowed (see the module's docstring)."""
        if self.anything:
            return
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None:
            if not self._address_allowed(host):
                raise HostNotAllowed(self._refusal(host, ""))
            return
        if self._named(host):
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 80
        try:
            addresses = (resolve or resolved_addresses)(host, port)
        except OSError:
            addresses = []
        if not addresses:
            raise HostNotAllowed(self._refusal(host, DOES_NOT_RESOLVE))
        for address in addresses:
            if not self._address_allowed(address):
                raise HostNotAllowed(self._refusal(host, RESOLVES_TO.format(address=address)))

    def _refusal(self, host: str, why: str) -> str:
        return HOST_NOT_ALLOWED.format(host=host, why=why, allowed=self.text or "nothing")


def resolved_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what a connection to it may reach)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


# --- how ---------------------------------------------------------------------------------------


def _httpx():
    # openai 1.x and 2.x are built on httpx; 3.x on httpx2, and it still takes an httpx client
    # when httpx is installed. Either module offers the same Client and transport interface.
    try:
        import httpx
    except ImportError:  # pragma: no cover - openai 3.x without httpx
        import httpx2 as httpx
    return httpx


def http_client(*, key: str, policy: HostPolicy, timeout: float) -> Any:
    """An HTTP client for the openai package (and anything else that sends to a served model):
    no redirects, nothing taken from the environment, the host checked and the headers rebuilt
    (with ``Bearer <key>``) on every request."""
    httpx = _httpx()

    class Guarded(httpx.BaseTransport):
        def __init__(self):
            self.inner = httpx.HTTPTransport(trust_env=False)

        def handle_request(self, request):
            policy.check(str(request.url))
            kept = [(k, v) for k, v in request.headers.multi_items() if _sent(k)]
            request.headers = httpx.Headers([*kept, ("authorization", f"Bearer {key}")])
            return self.inner.handle_request(request)

        def close(self):
            self.inner.close()

    return httpx.Client(
        transport=Guarded(), follow_redirects=False, trust_env=False, timeout=timeout
    )


def _sent(header: str) -> bool:
    header = header.lower()
    return header in SENT_HEADERS or header.startswith("x-stainless-")


# --- what is kept of a failure -----------------------------------------------------------------


def short_message(text: Any) -> str:
    """The first line of ``text``, at most MESSAGE_CHARS characters ('' for a traceback)."""
    if not isinstance(text, str):
        return ""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if line.startswith("Traceback"):
        return ""
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def server_message(body: Any) -> str:
    """The server's own error message from a JSON error body (OpenAI's ``{"error": {"message":
    ...}}``, or ``{"message": ...}`` / ``{"detail": ...}``, FastAPI's ``{"detail": [{"msg":
    ...}]}``), or the first line of a plain-text body (a server that answers a 400 with text,
    not JSON), shortened; '' for anything else (an HTML page, a traceback)."""
    if isinstance(body, str):
        text = body.strip()
        return "" if text.startswith("<") else short_message(text)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return short_message(inner)
        if isinstance(inner, dict):
            for field in ("message", "detail", "msg"):
                value = inner.get(field)
                if isinstance(value, str):
                    return short_message(value)
                if isinstance(value, list) and value:
                    return server_message(value[0])
    return ""


def failure_summary(status: int | None, body: Any = None, *, kind: str = "") -> str:
    """What staff see of a failed request: its status and the server's message, or how the
    connection failed."""
    if status is None:
        return TIMED_OUT if "timeout" in kind.lower() else NO_CONNECTION.format(kind=kind or "?")
    if 300 <= status < 400:
        return REDIRECT_REFUSED.format(status=status)
    message = server_message(body)
    return HTTP_ERROR.format(status=status, message=f": {message}" if message else "")

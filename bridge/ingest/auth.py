"""Ingest authentication: an HMAC-SHA256 body signature with a timestamp, or a bearer token.

Signature header (``X-Bridge-Signature``)::

    t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with a shared secret>

Any secret of ``ingest.hmac_secrets`` may have signed it (so a secret can be rotated: list
the new one beside the old, move the senders over, then drop the old one), and ``t`` must
lie within ``TOLERANCE_S`` of the server's clock (a captured request cannot be replayed
later). Several ``v1=`` entries are allowed (a sender signing with old and new secret
during a rotation). Or ``Authorization: Bearer <token>`` with one of ``ingest.bearer_tokens``.

Every comparison of a secret value goes through ``hmac.compare_digest``. Error texts name
what was wrong (missing, malformed, stale, not matching), never a secret, a token or a
signature. With no secret and no token configured at all, authentication is off
(local development); the app logs a warning when it starts that way.

The pure functions (``sign``, ``parse_signature_header``, ``verify_signature``,
``verify_bearer``) carry the logic; ``Authenticator`` binds them to a configuration and a
clock; ``dependency`` makes a FastAPI dependency of one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from pydantic import SecretStr

#: Header carrying the body signature.
SIGNATURE_HEADER = "X-Bridge-Signature"
#: Signature scheme version: the only one so far.
SCHEME = "v1"
#: Largest accepted distance (seconds) between the signature's timestamp and now.
TOLERANCE_S = 300
#: Challenge sent with every 401.
WWW_AUTHENTICATE = f'Bearer realm="bridge-ingest", HMAC-SHA256 header="{SIGNATURE_HEADER}"'

_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_MAX_HEADER_CHARS = 2048

Method = Literal["signature", "bearer", "disabled"]


class AuthFailed(Exception):
    """Authentication failed; ``reason`` is safe to show (no secret, token or signature in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class SignatureHeader:
    """A parsed ``X-Bridge-Signature``: the timestamp and every ``v1`` signature (lowercase hex)."""

    timestamp: int
    signatures: tuple[str, ...]


def _secret(value: str | SecretStr) -> bytes:
    return (value.get_secret_value() if isinstance(value, SecretStr) else value).encode("utf-8")


def _digest(body: bytes, secret: str | SecretStr, t: int) -> str:
    return hmac.new(_secret(secret), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, t: int) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` signed with ``secret`` at unix time ``t``."""
    return f"t={int(t)},{SCHEME}={_digest(body, secret, int(t))}"


def parse_signature_header(value: str) -> SignatureHeader:
    """Parse ``t=<int>,v1=<hex>[,v1=<hex>…]``; unknown keys (future schemes) are ignored.

    Raises ``AuthFailed`` for anything malformed: no ``t``, two ``t``, a ``t`` that is not
    a plain integer, no ``v1``, a ``v1`` that is not 64 hex digits."""
    if len(value) > _MAX_HEADER_CHARS:
        raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        key, item = key.strip(), item.strip()
        if not sep:
            raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: expected t=<unix seconds>,v1=<hex>")
        if key == "t":
            if timestamp is not None:
                raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: more than one t")
            if not _TIMESTAMP.match(item):
                raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: t is not a unix time in seconds")
            timestamp = int(item)
        elif key == SCHEME:
            lowered = item.lower()
            if not _HEX_SHA256.match(lowered):
                raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: v1 is not 64 hex digits")
            signatures.append(lowered)
    if timestamp is None:
        raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: no t=<unix seconds>")
    if not signatures:
        raise AuthFailed(f"malformed {SIGNATURE_HEADER} header: no {SCHEME}=<hex signature>")
    return SignatureHeader(timestamp, tuple(signatures))


def verify_signature(
    header: str,
    body: bytes,
    secrets: Sequence[str | SecretStr],
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> None:
    """Accept ``header`` if one of its signatures is the HMAC of ``body`` with one of ``secrets``
    and its timestamp is within ``tolerance_s`` of ``now``; raise ``AuthFailed`` otherwise.

    Every (secret, signature) pair is compared, in constant time, even after a match, so the
    time taken says nothing about which secret or signature matched."""
    parsed = parse_signature_header(header)
    if abs(now - parsed.timestamp) > tolerance_s:
        raise AuthFailed(
            f"signature timestamp is more than {int(tolerance_s)} s away from the server's clock"
        )
    if not secrets:
        raise AuthFailed("signatures are not accepted: no HMAC secret is configured")
    matched = False
    for secret in secrets:
        expected = _digest(body, secret, parsed.timestamp).encode("ascii")
        for given in parsed.signatures:
            matched |= hmac.compare_digest(expected, given.encode("ascii"))
    if not matched:
        raise AuthFailed("signature does not match the body with any configured secret")


def verify_bearer(authorization: str, tokens: Sequence[str | SecretStr]) -> None:
    """Accept ``Authorization: Bearer <token>`` when the token is one of ``tokens``; else ``AuthFailed``.

    The token is compared with every configured token in constant time."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailed("Authorization header is not 'Bearer <token>'")
    if not tokens:
        raise AuthFailed("bearer tokens are not accepted: no token is configured")
    given = token.strip().encode("utf-8", "surrogateescape")
    matched = False
    for candidate in tokens:
        matched |= hmac.compare_digest(_secret(candidate), given)
    if not matched:
        raise AuthFailed("bearer token not accepted")


@dataclass
class Authenticator:
    """Checks one request's headers (and, for a signature, its raw body) against a configuration."""

    hmac_secrets: Sequence[SecretStr] = ()
    bearer_tokens: Sequence[SecretStr] = ()
    clock: Callable[[], float] = field(default=time.time)
    tolerance_s: float = TOLERANCE_S

    @property
    def enabled(self) -> bool:
        """False when nothing at all is configured: every request is let in (local development)."""
        return bool(self.hmac_secrets or self.bearer_tokens)

    def needs_body(self, headers: Mapping[str, str]) -> bool:
        """Whether ``authenticate`` will need the raw body (a signature is to be checked)."""
        return self.enabled and SIGNATURE_HEADER.lower() in {k.lower() for k in headers}

    def precheck(self, headers: Mapping[str, str]) -> None:
        """Refuse a malformed or stale signature from the headers alone, before the body is read
        (a request with a valid bearer token is left to ``authenticate``)."""
        lower = {k.lower(): v for k, v in headers.items()}
        signature = lower.get(SIGNATURE_HEADER.lower())
        if signature is None:
            return
        authorization = lower.get("authorization")
        if authorization is not None:
            try:
                verify_bearer(authorization, self.bearer_tokens)
                return
            except AuthFailed:
                pass
        parsed = parse_signature_header(signature)
        if abs(self.clock() - parsed.timestamp) > self.tolerance_s:
            raise AuthFailed(
                f"signature timestamp is more than {int(self.tolerance_s)} s away from the server's clock"
            )

    def authenticate(self, headers: Mapping[str, str], body: bytes | None) -> Method:
        """How the request authenticated; raises ``AuthFailed`` when it did not.

        A valid bearer token is enough; otherwise the signature decides. When both are
        present and both fail, the signature's reason is reported."""
        if not self.enabled:
            return "disabled"
        lower = {k.lower(): v for k, v in headers.items()}
        authorization = lower.get("authorization")
        signature = lower.get(SIGNATURE_HEADER.lower())
        if authorization is None and signature is None:
            raise AuthFailed(f"missing credentials: send {SIGNATURE_HEADER} or Authorization: Bearer <token>")
        failure: AuthFailed | None = None
        if authorization is not None:
            try:
                verify_bearer(authorization, self.bearer_tokens)
                return "bearer"
            except AuthFailed as exc:
                failure = exc
        if signature is not None:
            if body is None:
                raise AuthFailed("signature given but the body was not read")  # caller's bug
            verify_signature(signature, body, self.hmac_secrets, self.clock(), self.tolerance_s)
            return "signature"
        assert failure is not None
        raise failure


def _fingerprint(hmac_secrets: Sequence[SecretStr], bearer_tokens: Sequence[SecretStr]) -> bytes:
    """A digest of the ingest secrets, to tell one set from another without keeping them twice."""
    h = hashlib.sha256()
    for group in (hmac_secrets, bearer_tokens):
        for value in group:
            raw = _secret(value)
            h.update(len(raw).to_bytes(4, "big") + raw)
        h.update(b"\xff" * 4)  # separates the two lists
    return h.digest()


class AuthenticatorCache:
    """The ``Authenticator`` of the current configuration's ingest secrets.

    Looked up on every request, rebuilt only when the secrets themselves change (a reloaded
    merchants file with other ``hmac_secrets`` or ``bearer_tokens``). The cache holds the
    configuration object it was built from and compares secrets by value: keying it by
    ``id()`` of the configuration let a reloaded configuration that reused a freed object's id
    keep the rotated-out secrets in force. ``on_new`` is called with each new authenticator."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        on_new: Callable[[Authenticator], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_new = on_new
        self._config: object | None = None
        self._fingerprint = b""
        self._current: Authenticator | None = None

    def get(self, config: Any) -> Authenticator:
        """The authenticator for ``config`` (anything with ``hmac_secrets`` and ``bearer_tokens``)."""
        if config is self._config and self._current is not None:
            return self._current
        fingerprint = _fingerprint(config.hmac_secrets, config.bearer_tokens)
        if self._current is None or not hmac.compare_digest(fingerprint, self._fingerprint):
            self._current = Authenticator(config.hmac_secrets, config.bearer_tokens, clock=self._clock)
            self._fingerprint = fingerprint
            if self._on_new is not None:
                self._on_new(self._current)
        self._config = config  # held, so its id cannot be reused while it is the key
        return self._current


def dependency(
    authenticator: Callable[[], Authenticator], read_body: Callable[[Request], Awaitable[bytes]]
) -> Callable[[Request], Awaitable[Method]]:
    """A FastAPI dependency: authenticate the request or raise ``AuthFailed`` (the app answers 401).

    ``authenticator`` gives the current one (the configuration may be reloaded);
    ``read_body`` reads the raw body (with the app's size cap) only when a signature must
    be checked, so an unauthenticated client cannot make the server read a large body."""

    async def authenticate(request: Request) -> Method:
        auth = authenticator()
        body = None
        if auth.needs_body(request.headers):
            auth.precheck(request.headers)  # a stale or malformed signature: no body is read
            body = await read_body(request)
        return auth.authenticate(request.headers, body)

    return authenticate

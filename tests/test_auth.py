"""Ingest authentication as pure functions: signature parsing and checking, bearer tokens."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.ingest.auth import (
    Authenticator,
    AuthFailed,
    parse_signature_header,
    sign,
    verify_bearer,
    verify_signature,
)

NOW = 1_700_000_000
BODY = b'{"outcomeId":"o-1","kind":"guest.identified"}'
SECRET = "current-secret-value"
OLD = "older-secret-value"
TOKEN = "ingest-token-value"


def hex_sig(body: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_sign_is_the_documented_hmac() -> None:
    assert sign(BODY, SECRET, NOW) == f"t={NOW},v1={hex_sig(BODY, SECRET, NOW)}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"t={NOW},v1={'a' * 64}", (NOW, ("a" * 64,))),
        (f" t = {NOW} , v1 = {'A' * 64} ", (NOW, ("a" * 64,))),  # spaces, uppercase hex
        (f"v1={'b' * 64},t={NOW}", (NOW, ("b" * 64,))),  # any order
        (f"t={NOW},v1={'a' * 64},v1={'b' * 64}", (NOW, ("a" * 64, "b" * 64))),  # rotation
        (f"t={NOW},v0=whatever,v1={'c' * 64}", (NOW, ("c" * 64,))),  # unknown schemes ignored
    ],
)
def test_parse_signature_header(header: str, expected: tuple[int, tuple[str, ...]]) -> None:
    parsed = parse_signature_header(header)
    assert (parsed.timestamp, parsed.signatures) == expected


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        ("", "expected t="),
        ("garbage", "expected t="),
        (f"v1={'a' * 64}", "no t="),
        (f"t={NOW}", "no v1="),
        (f"t={NOW},t={NOW},v1={'a' * 64}", "more than one t"),
        (f"t=-5,v1={'a' * 64}", "not a unix time"),
        (f"t=1.5,v1={'a' * 64}", "not a unix time"),
        (f"t=abc,v1={'a' * 64}", "not a unix time"),
        (f"t=1{'0' * 20},v1={'a' * 64}", "not a unix time"),
        (f"t={NOW},v1={'a' * 63}", "not 64 hex digits"),
        (f"t={NOW},v1={'g' * 64}", "not 64 hex digits"),
        (f"t={NOW},v1={'é' * 64}", "not 64 hex digits"),
        (f"t={NOW},v1={'a' * 64}," + "x=y," * 1000, "too long"),
    ],
)
def test_malformed_signature_headers(header: str, complaint: str) -> None:
    with pytest.raises(AuthFailed) as caught:
        parse_signature_header(header)
    assert complaint in caught.value.reason
    assert "malformed" in caught.value.reason


@pytest.mark.parametrize(
    ("case", "header", "body", "secrets", "now", "error"),
    [
        ("valid", sign(BODY, SECRET, NOW), BODY, [SECRET], NOW, None),
        ("second secret listed", sign(BODY, OLD, NOW), BODY, [SECRET, OLD], NOW, None),
        ("rotated out", sign(BODY, OLD, NOW), BODY, [SECRET], NOW, "does not match"),
        ("wrong secret", sign(BODY, "nope", NOW), BODY, [SECRET], NOW, "does not match"),
        ("tampered body", sign(BODY, SECRET, NOW), BODY + b" ", [SECRET], NOW, "does not match"),
        (
            "other timestamp",
            f"t={NOW + 1},v1={hex_sig(BODY, SECRET, NOW)}",
            BODY,
            [SECRET],
            NOW,
            "does not match",
        ),
        ("299 s old", sign(BODY, SECRET, NOW - 299), BODY, [SECRET], NOW, None),
        ("300 s old", sign(BODY, SECRET, NOW - 300), BODY, [SECRET], NOW, None),
        ("301 s old", sign(BODY, SECRET, NOW - 301), BODY, [SECRET], NOW, "away from the server's clock"),
        ("300 s ahead", sign(BODY, SECRET, NOW + 300), BODY, [SECRET], NOW, None),
        ("301 s ahead", sign(BODY, SECRET, NOW + 301), BODY, [SECRET], NOW, "away from the server's clock"),
        ("one of two v1", f"{sign(BODY, SECRET, NOW)},v1={'0' * 64}", BODY, [SECRET], NOW, None),
        ("no secrets", sign(BODY, SECRET, NOW), BODY, [], NOW, "no HMAC secret"),
        ("SecretStr", sign(BODY, SECRET, NOW), BODY, [SecretStr(SECRET)], NOW, None),
        ("empty body", sign(b"", SECRET, NOW), b"", [SECRET], NOW, None),
    ],
)
def test_verify_signature(
    case: str, header: str, body: bytes, secrets: list[Any], now: int, error: str | None
) -> None:
    if error is None:
        verify_signature(header, body, secrets, now)
    else:
        with pytest.raises(AuthFailed, match=error):
            verify_signature(header, body, secrets, now)


@pytest.mark.parametrize(
    ("authorization", "tokens", "error"),
    [
        (f"Bearer {TOKEN}", [TOKEN], None),
        (f"bearer {TOKEN}", [TOKEN], None),
        (f"Bearer   {TOKEN}  ", [TOKEN], None),
        (f"Bearer {TOKEN}", ["other", SecretStr(TOKEN)], None),
        (f"Bearer {TOKEN}x", [TOKEN], "not accepted"),
        (f"Bearer {TOKEN[:-1]}", [TOKEN], "not accepted"),
        (f"Basic {TOKEN}", [TOKEN], "not 'Bearer <token>'"),
        ("Bearer", [TOKEN], "not 'Bearer <token>'"),
        ("Bearer ", [TOKEN], "not 'Bearer <token>'"),
        (f"Bearer {TOKEN}", [], "no token is configured"),
        ("Bearer tökén", [TOKEN], "not accepted"),
    ],
)
def test_verify_bearer(authorization: str, tokens: list[Any], error: str | None) -> None:
    if error is None:
        verify_bearer(authorization, tokens)
    else:
        with pytest.raises(AuthFailed, match=error):
            verify_bearer(authorization, tokens)


def authenticator(
    now: float = NOW, secrets: tuple[str, ...] = (SECRET,), tokens: tuple[str, ...] = (TOKEN,)
) -> Authenticator:
    return Authenticator(
        tuple(SecretStr(s) for s in secrets), tuple(SecretStr(t) for t in tokens), clock=lambda: now
    )


def test_authenticator_methods() -> None:
    a = authenticator()
    assert a.enabled
    assert a.authenticate({"Authorization": f"Bearer {TOKEN}"}, None) == "bearer"
    assert a.authenticate({"x-bridge-signature": sign(BODY, SECRET, NOW)}, BODY) == "signature"
    # a bad bearer beside a good signature: the signature lets it in
    headers = {"Authorization": "Bearer wrong", "X-Bridge-Signature": sign(BODY, SECRET, NOW)}
    assert a.authenticate(headers, BODY) == "signature"
    assert a.needs_body(headers)
    assert not a.needs_body({"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(AuthFailed, match="missing credentials"):
        a.authenticate({}, BODY)
    with pytest.raises(AuthFailed, match="bearer token not accepted"):
        a.authenticate({"Authorization": "Bearer wrong"}, BODY)


def test_injected_clock_decides_the_window() -> None:
    header = sign(BODY, SECRET, NOW)
    assert authenticator(now=NOW + 300).authenticate({"X-Bridge-Signature": header}, BODY) == "signature"
    with pytest.raises(AuthFailed, match="300 s"):
        authenticator(now=NOW + 301).authenticate({"X-Bridge-Signature": header}, BODY)


def test_nothing_configured_means_disabled() -> None:
    a = authenticator(secrets=(), tokens=())
    assert not a.enabled
    assert a.authenticate({}, None) == "disabled"
    assert not a.needs_body({"X-Bridge-Signature": "t=1,v1=00"})


def test_only_tokens_configured_refuses_signatures() -> None:
    a = authenticator(secrets=())
    with pytest.raises(AuthFailed, match="no HMAC secret"):
        a.authenticate({"X-Bridge-Signature": sign(BODY, SECRET, NOW)}, BODY)


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # bridge.ingest.auth looks it up per call
    verify_signature(sign(BODY, OLD, NOW), BODY, [SECRET, OLD, "third"], NOW)
    # every configured secret is compared, also after the match: timing says nothing of which one
    assert len(calls) == 3
    assert hex_sig(BODY, OLD, NOW).encode() in {a for a, _ in calls}

    calls.clear()
    verify_bearer(f"Bearer {TOKEN}", [TOKEN, "other", "another"])
    assert len(calls) == 3
    assert (TOKEN.encode(), TOKEN.encode()) in calls

    calls.clear()
    with pytest.raises(AuthFailed):
        verify_bearer("Bearer nope", [TOKEN])
    assert calls == [(TOKEN.encode(), b"nope")]


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Authorization": f"Bearer {TOKEN}x"}, BODY),
        ({"Authorization": f"Bearer {OLD}"}, BODY),
        ({"X-Bridge-Signature": sign(BODY, OLD, NOW)}, BODY),
        ({"X-Bridge-Signature": sign(BODY, SECRET, NOW)}, BODY + b"x"),
        ({"X-Bridge-Signature": sign(BODY, SECRET, NOW - 1000)}, BODY),
        ({"X-Bridge-Signature": f"t={NOW},v1={hex_sig(BODY, SECRET, NOW)[:-1]}"}, BODY),
        ({"X-Bridge-Signature": f"{TOKEN}={SECRET}"}, BODY),
        ({}, BODY),
    ],
)
def test_error_texts_never_carry_secrets_tokens_or_signatures(headers: dict[str, str], body: bytes) -> None:
    a = authenticator()
    with pytest.raises(AuthFailed) as caught:
        a.authenticate(headers, body)
    text = f"{caught.value} {caught.value.reason} {caught.value!r}"
    forbidden = [SECRET, OLD, TOKEN, hex_sig(BODY, SECRET, NOW), hex_sig(BODY, OLD, NOW)]
    forbidden += [v for v in headers.values()]
    for value in forbidden:
        assert value not in text
    assert "t=" not in text or "t=<unix seconds>" in text


def test_precheck_refuses_a_stale_signature_from_the_headers_alone():
    authenticator = Authenticator(hmac_secrets=[SecretStr("s3cret")], clock=lambda: NOW)
    stale = {"X-Bridge-Signature": sign(b"{}", "s3cret", NOW - 301)}
    with pytest.raises(AuthFailed, match="away from the server's clock"):
        authenticator.precheck(stale)
    authenticator.precheck({"X-Bridge-Signature": sign(b"{}", "s3cret", NOW - 10)})  # fresh: body next
    authenticator.precheck({})  # no signature: nothing to check here


def test_the_cache_follows_every_rotation_of_the_secrets() -> None:
    """Configurations are loaded, replaced and freed; CPython often gives a new one the freed
    one's id. The authenticator must follow the secrets, never an object id."""
    from bridge.config import MerchantsConfig
    from bridge.ingest.auth import AuthenticatorCache

    built: list[Authenticator] = []
    cache = AuthenticatorCache(clock=lambda: NOW, on_new=built.append)
    old_secret = old_token = None
    for n in range(10):
        secret, token = f"secret-{n}", f"token-{n}"
        config = MerchantsConfig(hmac_secrets=(SecretStr(secret),), bearer_tokens=(SecretStr(token),))
        current = cache.get(config)
        assert cache.get(config) is current  # the same configuration: no rebuild
        assert current.authenticate({"X-Bridge-Signature": sign(BODY, secret, NOW)}, BODY) == "signature"
        assert current.authenticate({"Authorization": f"Bearer {token}"}, None) == "bearer"
        if old_secret is not None:
            with pytest.raises(AuthFailed):
                current.authenticate({"X-Bridge-Signature": sign(BODY, old_secret, NOW)}, BODY)
            with pytest.raises(AuthFailed):
                current.authenticate({"Authorization": f"Bearer {old_token}"}, None)
        old_secret, old_token = secret, token
        del config, current  # freed: the next configuration may get its id
    assert len(built) == 10
    # A reload with the same secrets (another merchant changed) keeps the authenticator.
    same = MerchantsConfig(hmac_secrets=(SecretStr(old_secret),), bearer_tokens=(SecretStr(old_token),))
    assert cache.get(same) is built[-1]

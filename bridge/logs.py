"""Structured logs: one JSON object per line, secrets and guest contact data scrubbed.

Log calls carry ids and counts only. As a second line of defence every record passes a
filter that replaces the configured secrets (write keys, ingest tokens and HMAC secrets)
and anything shaped like an email address, a card number or a phone number, wherever it
appears (message, arguments, exception text).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

#: Shapes of guest contact data and card numbers.
_PATTERNS = (
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # email
    re.compile(r"\+\d[\d .()-]{7,}\d"),  # international phone numbers
    re.compile(
        r"\(\d{3}\)\s?\d{3}[-.\s]\d{4}|(?<![\w-])\d{3}[-.]\d{3}[-.]\d{4}(?![\w-])"
    ),  # national phone numbers
    re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])"),  # card numbers: 12 to 19 digits
)
#: Fields of a LogRecord that are not extras.
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and exception text) with secrets and contact data scrubbed."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Scrub ``secrets`` too (longest first, so that none is left half replaced)."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can
            message = str(record.msg)
        record.msg = scrub(message, self.secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, scrub(value, self.secrets))
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extras, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Extras (ids, counts) only from the bridge's own loggers, and scalars only: other
        # libraries attach payloads (Celery's ``data`` holds task arguments: guest data).
        if record.name.startswith("bridge"):
            for key, value in vars(record).items():
                scalar = isinstance(value, str | int | float | bool) or value is None
                if key not in _STANDARD and not key.startswith("_") and scalar:
                    entry[key] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "INFO", secrets: Iterable[str] = (), stream: Any = None) -> None:
    """Send every log record (the bridge's, Celery's, uvicorn's) through one JSON handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(secrets))
    logging.captureWarnings(True)  # warnings become log records too (one format for everything)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "kombu"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # At DEBUG these log payloads: segment-analytics-python whole request bodies (with the
    # write key), Celery and kombu task arguments (outcomes with guest data). Never below INFO.
    for name in ("segment", "celery", "kombu", "amqp"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def remember_secrets(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to what the installed log handlers scrub (a configuration reloaded with a
    new write key or token: the old ones stay, as messages may still name them)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, RedactingFilter):
                found.add(secrets)


def secrets_of(merchants: Any) -> list[str]:
    """Every secret of a ``MerchantsConfig``: write keys, bearer tokens, HMAC secrets."""
    found = [s.write_key.get_secret_value() for m in merchants.merchants.values() for s in m.sources]
    found += [t.get_secret_value() for t in merchants.bearer_tokens]
    found += [h.get_secret_value() for h in merchants.hmac_secrets]
    return found

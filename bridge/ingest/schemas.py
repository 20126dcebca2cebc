"""The bodies the ingest answers with, as pydantic models (for the OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorBody(BaseModel):
    error: str
    message: str


class FieldError(BaseModel):
    path: str
    reason: str


class ItemError(BaseModel):
    index: int
    outcomeId: str | None
    errors: list[FieldError]


class IngestResult(BaseModel):
    accepted: int
    duplicate: int
    invalid: int
    errors: list[ItemError]


class Readiness(BaseModel):
    status: str
    reasons: list[str] = []

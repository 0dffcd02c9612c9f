"""The feature server's errors: each carries its HTTP status and body; one handler answers them all.

As in Feast's feature server (`exc.http_status_code()`, `exc.to_error_detail()`), no endpoint
decides a status: the server raises a `ServingError`, the lower layers raise their own domain
errors, and `DOMAIN_ERRORS` says once which status each domain error means.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from feature_pipelines.features.access import FeatureAccessError
from feature_pipelines.features.on_demand import OnDemandFeatureError
from feature_pipelines.features.references import UnknownFeatureError
from feature_pipelines.online.client import RedisConfigError
from feature_pipelines.online.encoding import OnlineEncodingError
from feature_pipelines.online.keys import OnlineKeyError
from feature_pipelines.online.read import OnlineReadError

logger = logging.getLogger(__name__)

_SHOWN_ISSUES = 5


class ServingError(Exception):
    """An answer other than 200: its HTTP status, a one-sentence `detail` and optional headers."""

    http_status: ClassVar[int] = 500

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers) if headers else None

    def to_error_detail(self) -> dict[str, Any]:
        """The JSON body (the documented ErrorResponse)."""
        return {"detail": self.detail}


class InvalidRequestError(ServingError):
    """A well-formed body asking for something impossible: a bad reference, column or value."""

    http_status = 422


class UnknownReferenceError(ServingError):
    """A feature view, feature or on-demand feature the server does not know."""

    http_status = 404


class TooLargeError(ServingError):
    """More entity rows, or a larger body, than this server accepts."""

    http_status = 413


class AuthenticationError(ServingError):
    """A missing or wrong API key."""

    http_status = 401


class AccessRefusedError(ServingError):
    """An authenticated consumer asking for features its policy refuses."""

    http_status = 403


class StoreUnavailableError(ServingError):
    """The online store is unreachable, unconfigured or slower than the request's deadline."""

    http_status = 503


class ServiceUnavailableError(ServingError):
    """A feature service whose pinned fitted statistics are not loaded: it is not served until they are."""

    http_status = 503


class StoreCorruptError(ServingError):
    """The online store holds a value this server cannot decode (a server-side fault, not the caller's)."""

    http_status = 500


class MalformedBodyError(InvalidRequestError):
    """A body that fails the request model: `detail` summarises the first issues, `errors` lists
    them all (location, message, pydantic type); the offending input is never echoed back."""

    def __init__(self, issues: Sequence[Mapping[str, Any]]) -> None:
        self.errors = [
            {"loc": [part if isinstance(part, int) else str(part) for part in issue.get("loc", ())],
             "msg": str(issue.get("msg", "")), "type": str(issue.get("type", ""))}
            for issue in issues
        ]
        shown = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in self.errors[:_SHOWN_ISSUES]
        )
        more = f" (and {len(self.errors) - _SHOWN_ISSUES} more)" if len(self.errors) > _SHOWN_ISSUES else ""
        super().__init__(f"invalid request: {shown or 'malformed body'}{more}")

    def to_error_detail(self) -> dict[str, Any]:
        return {"detail": self.detail, "errors": self.errors}


@dataclass(frozen=True)
class DomainErrorRule:
    """What a lower layer's error means to a caller: its serving error, detail, and how loudly to log it."""

    error: type[Exception]
    serving_error: type[ServingError]
    detail: Callable[[Exception], str] = str
    log_level: int | None = None


# The one table of domain errors; the first rule whose type matches wins (RedisConfigError is
# not a redis.RedisError, so their order is free, but keep subclasses above their bases).
DOMAIN_ERRORS: tuple[DomainErrorRule, ...] = (
    DomainErrorRule(UnknownFeatureError, UnknownReferenceError),
    DomainErrorRule(FeatureAccessError, AccessRefusedError),  # logged by auth.authorize, naming the consumer
    DomainErrorRule(OnlineReadError, InvalidRequestError),
    DomainErrorRule(OnDemandFeatureError, InvalidRequestError),
    DomainErrorRule(OnlineKeyError, InvalidRequestError),
    DomainErrorRule(
        OnlineEncodingError,
        StoreCorruptError,
        lambda error: f"the online store holds a value this server cannot decode: {error}",
        log_level=logging.ERROR,
    ),
    DomainErrorRule(RedisConfigError, StoreUnavailableError, lambda error: f"online store not configured: {error}"),
    DomainErrorRule(
        redis.RedisError,
        StoreUnavailableError,
        lambda error: f"online store (Redis) unavailable: {type(error).__name__}: {error}",
    ),
)


def as_serving_error(error: Exception) -> ServingError:
    """The serving error a raised exception stands for (by `DOMAIN_ERRORS` for a domain error)."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, RequestValidationError):
        return MalformedBodyError(error.errors())
    for rule in DOMAIN_ERRORS:
        if isinstance(error, rule.error):
            if rule.log_level is not None:
                logger.log(rule.log_level, "%s answered %d: %s", type(error).__name__,
                           rule.serving_error.http_status, error)
            return rule.serving_error(rule.detail(error))
    raise TypeError(f"no serving error is declared for {type(error).__name__}") from error


def error_response(_: Request, error: Exception) -> JSONResponse:
    """The one exception handler: the error's own status, body and headers."""
    serving = as_serving_error(error)
    return JSONResponse(serving.to_error_detail(), status_code=serving.http_status, headers=serving.headers)


def install_error_handler(app: FastAPI) -> None:
    """Answer every serving error, every domain error of `DOMAIN_ERRORS` and a malformed body
    with `error_response` (FastAPI's own answer to a malformed body is a bare list, undocumented)."""
    for error in (ServingError, RequestValidationError, *(rule.error for rule in DOMAIN_ERRORS)):
        app.add_exception_handler(error, error_response)

"""Turning a Redis connection failure into an error that says where, what and what to do.

redis-py's own messages ("Error 111 connecting to 127.0.0.1:6390", "invalid username-password
pair") name neither the feature view nor the deployment, and say nothing about TLS
configuration. These errors do, always with the target redacted (a password becomes `***`),
and they scrub the client's password from any text they carry, because a step failure is
stored in the Dagster event log and shown in the UI.

`OnlineStoreUnavailableError` is a `redis.ConnectionError`, so code that already handles an
unreachable Redis (the feature server's 503, callers of `publish`) keeps handling it.
"""

from __future__ import annotations

import ssl

import redis

from feature_pipelines.online.keys import is_cluster_client

REDACTED = "***"


class OnlineStoreUnavailableError(redis.ConnectionError):
    """Redis was unreachable, refused the credentials or the TLS handshake, or went away."""


def client_target(client: redis.Redis) -> str:
    """Where `client` points, as it may be logged: a URL with any password shown as `***`."""
    if is_cluster_client(client):
        nodes = sorted(node.name for node in client.get_nodes())  # type: ignore[attr-defined]
        return f"redis cluster [{', '.join(nodes)}]"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    userinfo = ""
    if kwargs.get("password") is not None:
        userinfo = f"{kwargs.get('username') or ''}:{REDACTED}@"
    elif kwargs.get("username"):
        userinfo = f"{kwargs['username']}@"
    if kwargs.get("path"):
        return f"unix://{userinfo}{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    host = kwargs.get("host", "localhost")
    if ":" in str(host):
        host = f"[{host}]"
    return f"{scheme}://{userinfo}{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def client_password(client: redis.Redis) -> str | None:
    """The password a (non-cluster) client authenticates with, only ever used for scrubbing."""
    if is_cluster_client(client):
        return None
    password = client.connection_pool.connection_kwargs.get("password")
    return str(password) if password else None


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by `***`."""
    if not secret:
        return text
    return text.replace(secret, REDACTED)


def _is_tls_verification_failure(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def reason(error: redis.RedisError) -> str:
    """One sentence on what went wrong, with the usual fix."""
    if isinstance(error, redis.AuthenticationError):
        return (
            "the server refused the credentials (wrong or missing password, or unknown user): "
            "check the password the online store is configured with"
        )
    if _is_tls_verification_failure(error):
        return (
            "the server's TLS certificate could not be verified: point the CA bundle setting "
            "at the CA that signed it (or use the system store for a public CA)"
        )
    if isinstance(error, redis.TimeoutError):
        return "the server did not answer within the socket timeout"
    return "the server is unreachable or closed the connection"


def unavailable(
    error: redis.RedisError, *, what: str, target: str, password: str | None, consequence: str = ""
) -> OnlineStoreUnavailableError:
    """An `OnlineStoreUnavailableError` for `error`: `what` failed against `target` and why.

    The original message is kept (scrubbed of `password`) because its errno or TLS reason is
    what an operator searches for.
    """
    detail = scrub(str(error), password)
    message = f"{what} against {target} failed: {reason(error)} ({type(error).__name__}: {detail})"
    if consequence:
        message += f". {consequence}"
    return OnlineStoreUnavailableError(message)


def safe_cause(error: BaseException, password: str | None) -> BaseException | None:
    """`error` to chain as the cause, or None when its text would carry the password.

    Dagster stores the whole cause chain of a step failure; a chained exception quoting the
    password would undo the scrubbing.
    """
    current: BaseException | None = error
    while current is not None:
        if password and password in str(current):
            return None
        current = current.__cause__
    return error

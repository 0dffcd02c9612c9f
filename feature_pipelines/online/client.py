"""Redis clients for the online store, configured by naming environment variables, never holding a secret.

A Redis URL often carries a password (redis://:secret@host:6379/0), and run config, resource
config and code all end up in the Dagster UI, logs or git. So the config names environment
variables, and the URL (and an optional separate password) are read from them when a client is
made. `describe()` is the only form of the target that may be logged or attached as metadata:
it never contains the password. TLS is chosen by the URL (`rediss://`); a private CA's bundle
comes from `FEATURE_PIPELINES_REDIS_CA_CERTS`, and the server's certificate is always verified.

Timeouts are short and retries few on purpose: the online store sits on the serving path, where
an unreachable Redis must turn into a fast, clear error (a 503), not a request that hangs for
redis-py's default ten reconnect attempts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from feature_pipelines.online.errors import client_password, safe_cause, unavailable
from feature_pipelines.online.keys import OnlineKeyError, validate_prefix_and_view

DEFAULT_URL_ENV_VAR = "FEATURE_PIPELINES_REDIS_URL"
DEFAULT_PASSWORD_ENV_VAR = "FEATURE_PIPELINES_REDIS_PASSWORD"
DEFAULT_CA_CERTS_ENV_VAR = "FEATURE_PIPELINES_REDIS_CA_CERTS"


class RedisConfigError(RuntimeError):
    """The online store is not configured, or configured in a way that cannot work."""


def redact_url(url: str) -> str:
    """The URL with any password (in the userinfo or a `password=` query argument, both of
    which redis-py honours) replaced by '***'; user names and hosts are kept: they help."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() == "password" for k, _ in pairs):
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class RedisTarget:
    """Where the online store lives: env var names for the URL and secrets, a key prefix, timeouts.

    Plain data (no Dagster): the `RedisResource` in `feature_pipelines.resources` holds the same
    fields as run config and hands them to this class, as the feature server's CLI does directly.
    """

    key_prefix: str
    url_env_var: str = DEFAULT_URL_ENV_VAR
    password_env_var: str | None = DEFAULT_PASSWORD_ENV_VAR
    ssl_ca_certs_env_var: str | None = DEFAULT_CA_CERTS_ENV_VAR
    socket_timeout_s: float = 2.0
    connect_timeout_s: float = 1.0

    def url(self) -> str:
        """The configured URL, read from the environment now (so a restart picks up rotation)."""
        url = os.environ.get(self.url_env_var, "").strip()
        if not url:
            raise RedisConfigError(
                f"no Redis URL configured: set {self.url_env_var} (e.g. "
                f"{self.url_env_var}=redis://127.0.0.1:6379/0) or run "
                "`feature-pipelines redis-up` to start a local redis-server and print its URL"
            )
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise RedisConfigError(
                f"{self.url_env_var} must be a redis://, rediss:// or unix:// URL, got scheme {scheme!r}"
            )
        return url

    def _password(self) -> str | None:
        if not self.password_env_var:
            return None
        return os.environ.get(self.password_env_var) or None

    def _ca_certs_path(self) -> str | None:
        if not self.ssl_ca_certs_env_var:
            return None
        return os.environ.get(self.ssl_ca_certs_env_var, "").strip() or None

    def _ca_certs(self, url: str) -> str | None:
        # Unset means the system's CA store, as for any TLS client; verification stays on either
        # way, so a missing private CA fails the handshake loudly rather than trusting anyone.
        path = self._ca_certs_path()
        if path is None:
            return None
        if urlsplit(url).scheme != "rediss":
            raise RedisConfigError(
                f"{self.ssl_ca_certs_env_var} gives a CA bundle but {self.url_env_var} is not a "
                "rediss:// URL: TLS is chosen by the URL scheme"
            )
        if not os.path.isfile(path):
            raise RedisConfigError(f"CA bundle {path!r} (from {self.ssl_ca_certs_env_var}) does not exist")
        return path

    def validated_prefix(self) -> str:
        """The key prefix, refused early when it could make two environments share keys."""
        try:
            validate_prefix_and_view(self.key_prefix, "view")
        except OnlineKeyError as error:
            raise RedisConfigError(str(error)) from error
        return self.key_prefix

    def client(self) -> redis.Redis:
        """A new client (with its own connection pool) for the configured server.

        Reconnects are retried once, after at most ~100 ms, so a restarting server is ridden
        out but a dead one fails within about two connect timeouts.
        """
        self.validated_prefix()
        url = self.url()
        kwargs: dict[str, object] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1),
        }
        password = self._password()
        if password is not None:
            kwargs["password"] = password
        ca_certs = self._ca_certs(url)
        if ca_certs is not None:
            kwargs["ssl_ca_certs"] = ca_certs
        return redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> str:
        """The target as it may be logged or shown: URL without password, prefix, secret sources."""
        raw = os.environ.get(self.url_env_var, "").strip()
        target = redact_url(raw) if raw else f"<{self.url_env_var} not set>"
        parts = [f"redis {target}", f"prefix {self.key_prefix!r}"]
        if self._password() is not None:
            parts.append(f"password from ${self.password_env_var}")
        if self._ca_certs_path() is not None:
            parts.append(f"CA bundle from ${self.ssl_ca_certs_env_var}")
        return ", ".join(parts)

    def check(self) -> str:
        """PING the configured server; returns `describe()` or raises a clear, secret-free error.

        Why: a wrong password or an untrusted certificate otherwise surfaces as redis-py's bare
        message at the first command of whatever runs next; this names the target and the
        environment variable to fix, for the CLI, a deployment check, or a test.
        """
        client = self.client()
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            password = client_password(client)
            raise unavailable(
                error, what="online store check (PING)", target=self.describe(), password=password,
                consequence=self._fix_hint(error),
            ) from safe_cause(error, password)
        finally:
            client.close()
        return self.describe()

    def _fix_hint(self, error: redis.RedisError) -> str:
        if isinstance(error, redis.AuthenticationError):
            source = f"${self.password_env_var}" if self.password_env_var else "the URL"
            return f"Fix: set {source} (or the password in ${self.url_env_var}) to the server's password"
        if "CERTIFICATE_VERIFY_FAILED" in str(error) and self.ssl_ca_certs_env_var:
            return f"Fix: set ${self.ssl_ca_certs_env_var} to the path of the CA bundle that signed the server's certificate"
        return ""

"""Who is calling the feature server (by API key) and whether they may read what they ask for."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence

from fastapi import Security
from fastapi.security import APIKeyHeader

from feature_pipelines.features.access import ConsumerPolicy, FeatureAccessError, check_feature_access
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.serving.consumers import ConsumerKey, check_distinct_keys
from feature_pipelines.serving.errors import AuthenticationError

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV_VAR = "FEATURE_PIPELINES_API_KEY"


class Authenticator:
    """The server's identities: the full-access key (FEATURE_PIPELINES_API_KEY) and each consumer's.

    `caller_policy` is the endpoint's dependency: the caller's policy (None: unrestricted).
    Without any key it requires none, and the OpenAPI spec then advertises no security scheme.
    """

    def __init__(
        self,
        api_key: str | None,
        consumers: Sequence[ConsumerKey],
        views: Mapping[str, FeatureView],
        on_demand: Mapping[str, OnDemandFeature],
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError(f"the API key is empty; unset {API_KEY_ENV_VAR} or give it a value")
        check_distinct_keys(consumers, api_key)
        self.views = views
        self.on_demand_inputs = {name: feature.inputs for name, feature in on_demand.items()}
        # (key bytes, policy): None is the full-access key.
        self.identities: list[tuple[bytes, ConsumerPolicy | None]] = [
            *([(api_key.encode(), None)] if api_key is not None else []),
            *[(consumer.api_key.encode(), consumer.policy) for consumer in consumers],
        ]
        self.caller_policy: Callable[..., Awaitable[ConsumerPolicy | None]] = (
            self._authenticate_dependency() if self.identities else _unrestricted
        )

    def _authenticate_dependency(self) -> Callable[..., Awaitable[ConsumerPolicy | None]]:
        header_scheme = APIKeyHeader(
            name=API_KEY_HEADER, auto_error=False, description=f"The key from {API_KEY_ENV_VAR}."
        )

        # async: it does no I/O, and FastAPI runs a plain `def` dependency in a worker thread,
        # a thread hop per request that cost 15-20% of the server's CPU per request.
        async def authenticate(provided: str | None = Security(header_scheme)) -> ConsumerPolicy | None:
            return self.authenticate(provided)

        return authenticate

    def authenticate(self, provided: str | None) -> ConsumerPolicy | None:
        """The policy of the key sent, by a constant-time comparison with every configured key, so
        neither a key nor which consumers exist can be guessed from timing.

        Compared as bytes: the header as received (ASGI hands it over latin-1 decoded) against
        the key's UTF-8 bytes, so a non-ASCII key sent as UTF-8 matches.
        """
        sent = provided.encode("latin-1") if provided is not None else b""
        matched: list[ConsumerPolicy | None] = []
        for key, policy in self.identities:  # no early exit: every key is compared
            if secrets.compare_digest(sent, key):
                matched.append(policy)
        if provided is None or not matched:
            raise AuthenticationError(
                f"missing or invalid API key: send it in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "APIKey"},
            )
        return matched[0]

    def authorize(self, references: Sequence[str], policy: ConsumerPolicy | None) -> None:
        """Refuse (FeatureAccessError, a 403) features the caller's policy does not allow; logged by name."""
        try:
            check_feature_access(references, self.views, policy, on_demand_inputs=self.on_demand_inputs)
        except FeatureAccessError as error:
            logger.warning("refused consumer %r: %s", error.consumer, sorted(error.refused))
            raise


async def _unrestricted() -> None:
    """No key configured: everyone may read everything (the server binds to loopback)."""

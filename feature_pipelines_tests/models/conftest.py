"""The serving tests' fixtures (a real redis-server, a published feature set, an app factory) for the model tests."""

from feature_pipelines_tests.online.conftest import redis_client, redis_server  # noqa: F401 - fixtures
from feature_pipelines_tests.serving.conftest import make_app, published  # noqa: F401 - fixtures

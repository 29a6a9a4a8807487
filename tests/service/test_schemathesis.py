"""Property-based requests from the app's own OpenAPI document: no input gives a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def api_schema(make_app):
    from schemathesis.python.asgi import shutdown_lifespans

    # Small limits, so generated requests are cheap to run or refused early (422 / 429);
    # `testserver` is the Host schemathesis' in-process client sends.
    app = make_app(allowed_hosts=["testserver", "localhost", "localhost:8000"], max_pending=3, max_seeds=4,
                   max_pixels=48 * 48 * 2, max_upload_bytes=64 * 1024)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # stops the worker schemathesis' lifespan started


# The event streams stay open while the caller's jobs can still produce events (they are
# tested in test_api.py).
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"/events$")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
def test_no_request_is_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)

"""Property-based fuzzing from the server's own OpenAPI schema (schemathesis): no input may
cause a 5xx. Bounded in examples and time; the server's max_new_tokens cap bounds each request."""

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.server.helpers import AUTH

EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_errors(case, server):
    response = case.call(headers=AUTH, timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
    assert server.is_running()

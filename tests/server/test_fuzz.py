"""Property-based fuzzing from the server's own OpenAPI schema (schemathesis + hypothesis): no
input may cause a 5xx. Bounded in examples per operation and in time; the server's
max_new_tokens cap bounds the work of each valid speech request."""

import time

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.server.helpers import AUTH

EXAMPLES_PER_OPERATION = 25
TIME_BUDGET_S = 600


def operations(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_covers_the_api(server):
    labels = {operation.label for operation in operations(server)}
    assert {"POST /v1/audio/speech", "POST /v1/audio/voices", "GET /v1/audio/voices", "GET /v1/audio/voices/{name}",
            "DELETE /v1/audio/voices/{name}", "GET /v1/models", "GET /v1/models/{model}",
            "POST /v1/speech-to-speech/{voice_id}", "POST /v1/speech-to-speech/{voice_id}/stream",
            "POST /v1/audio/watermark/detect"} <= labels, labels


def test_no_server_errors(server):
    deadline = time.monotonic() + TIME_BUDGET_S
    for operation in operations(server):
        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        def no_5xx(case):
            if time.monotonic() > deadline:
                pytest.fail(f"fuzzing ran past its {TIME_BUDGET_S} s budget at {operation.label}")
            response = case.call(headers=AUTH, timeout=120)
            case.validate_response(response, checks=[not_a_server_error])

        no_5xx()
    assert server.is_running()

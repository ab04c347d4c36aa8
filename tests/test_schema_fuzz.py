"""Schemathesis against the app's own OpenAPI schema, on a real server process (PostgreSQL +
Redis): every operation, admin included, with generated input — no 500, and every response
matches the schema. Bounded here (SCHEMATHESIS_EXAMPLES per operation, default 20); `make
fuzz` runs it longer. (Schemathesis' pytest plugin does not work with pytest 9 yet, so the
operations are driven from Hypothesis directly.)"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.support.processes import ServerProcess
from tests.support.stack import ADMIN_TOKEN, Stack, reset_database, run_sync

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "20"))
# No 500, and every answer as documented. (Not "every schema-valid request accepted": our
# validation is stricter than JSON Schema can say, e.g. real e-mail domains, UK plates.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def fuzzed_server(
    postgres_url: str, redis_available: str, start_server: Callable[..., ServerProcess]
) -> ServerProcess:
    run_sync(lambda: reset_database(postgres_url))
    # The fuzzer comes from 127.0.0.1, exempt from rate limits (its bursts are not abuse).
    return start_server(Stack("fuzz", postgres_url, redis_available, "gbfuzz:").env())


@pytest.mark.slow
def test_api_conforms_and_never_fails(fuzzed_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [
        operation
        for operation in (result.ok() for result in schema.get_all_operations())
        if operation.path.startswith(("/api/", "/health", "/ready"))
    ]
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=fuzzed_server.url, headers=headers, checks=CHECKS)

        check()

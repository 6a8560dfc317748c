"""The OpenAPI document's promises, read from the document itself.

Mirrors ``agent_ledger/openapi.py``; ``tests/test_api_schema.py`` checks the same document
against the running service with schemathesis.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from agent_ledger.app import create_app
from agent_ledger.config import Settings
from agent_ledger.openapi import api_document
from agent_ledger.patterns import AMOUNT_PATTERN, MONEY_OUT_PATTERN, SIGNED_AMOUNT_PATTERN

DOCUMENT = api_document(create_app(Settings()))
PROBLEM = {"$ref": "#/components/schemas/Problem"}
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}


def ids(value: Any) -> str:
    return f"{value[0]} {value[1]}" if isinstance(value, tuple) else str(value)


def test_litestars_own_schema_routes_are_not_operations() -> None:
    """/schema/* serve the document; they are not part of the API it describes."""
    assert not [path for path in DOCUMENT["paths"] if path.startswith("/schema")]
    assert {(m, p) for m, p, _ in OPERATIONS} >= PUBLIC | {("POST", "/v1/charges")}


def test_bearer_auth_is_a_declared_scheme() -> None:
    """Keys are declared once, as an HTTP bearer scheme, for clients and generators to use."""
    scheme = DOCUMENT["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


@pytest.mark.parametrize("operation", OPERATIONS, ids=ids)
def test_each_operation_says_whether_it_needs_a_key(operation: tuple) -> None:
    """Protected operations list bearer auth and document 401, 403 and 429; the probes do not."""
    method, path, spec = operation
    if (method, path) in PUBLIC:
        assert "security" not in spec
        assert not {"401", "403", "429"} & set(spec["responses"])
    else:
        assert spec["security"] == [{"bearerAuth": []}]
        assert {"401", "403", "429"} <= set(spec["responses"])


@pytest.mark.parametrize("operation", OPERATIONS, ids=ids)
def test_every_error_answer_is_a_documented_problem(operation: tuple) -> None:
    """Every 4xx and 5xx is a Problem under application/problem+json (the readiness probe's 503
    aside, which is its own report), with Retry-After where a retry is the answer."""
    method, path, spec = operation
    for status, response in spec["responses"].items():
        if int(status) < 400 or (method, path, status) == ("GET", "/readyz", "503"):
            continue
        assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, status
        if status in ("429", "503"):
            assert "Retry-After" in response["headers"]


@pytest.mark.parametrize("operation", OPERATIONS, ids=ids)
def test_statuses_follow_from_what_an_operation_reads(operation: tuple) -> None:
    """Every operation documents 400 (it refuses a query parameter it does not take); a path
    that names a resource documents 404; reading input documents 422; a body documents 413; the
    database's absence documents 503 everywhere but the probes."""
    _, path, spec = operation
    statuses = set(spec["responses"])
    assert "400" in statuses
    if "{" in path:
        assert "404" in statuses
    if "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", [])):
        assert "422" in statuses
    if "requestBody" in spec:
        assert "413" in statuses
    assert ("503" in statuses) == (path != "/healthz")


@pytest.mark.parametrize(
    ("operation_id", "statuses"),
    [
        ("createCharge", {"402", "403", "404", "409", "422"}),
        ("createHold", {"402", "403", "409"}),
        ("captureHold", {"402", "404", "409"}),
        ("releaseHold", {"404", "409"}),
        ("revokeKey", {"404", "409"}),
        ("updateAgent", {"404", "409"}),
    ],
)
def test_route_refusals_are_documented(operation_id: str, statuses: set[str]) -> None:
    """Refusals particular to a route (budget, holds, the last admin key) are listed too."""
    [spec] = [s for _, _, s in OPERATIONS if s["operationId"] == operation_id]
    assert statuses <= set(spec["responses"])


@pytest.mark.parametrize(
    "operation_id",
    [
        "createCharge",
        "createHold",
        "captureHold",
        "createAdjustment",
        "createChildAgent",
        "setAgentBudget",
        "setTeamBudget",
        "setRunBudget",
    ],
)
def test_amount_out_of_range_is_documented_where_it_can_be_answered(operation_id: str) -> None:
    """Every operation that takes an amount, or moves a counter, names the 422 it answers when
    either is past what the ledger can record."""
    [spec] = [s for _, _, s in OPERATIONS if s["operationId"] == operation_id]
    assert "`amount-out-of-range`" in spec["responses"]["422"]["description"]


def test_exports_declare_their_media_types() -> None:
    """The export answers NDJSON or CSV, and says so, not application/json."""
    [spec] = [s for _, _, s in OPERATIONS if s["operationId"] == "exportEntries"]
    assert set(spec["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}


def component(name: str) -> dict[str, Any]:
    return DOCUMENT["components"]["schemas"][name]


def string_branch(prop: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in prop.get("anyOf", [prop]) if b.get("type") == "string")


@pytest.mark.parametrize(
    "name",
    [
        "ChargeRequest",
        "HoldRequest",
        "CaptureRequest",
        "AdjustmentRequest",
        "BudgetUpdate",
        "LimitsUpdate",
        "TeamCreate",
        "AgentCreate",
        "AgentUpdate",
        "PriceUpdate",
        "StaffKeyCreate",
        "AgentKeyCreate",
        "KeyRotate",
    ],
)
def test_request_bodies_refuse_unknown_fields(name: str) -> None:
    """What the service refuses (unknown fields, server-owned ones among them), the document
    says: additionalProperties is false for every request body."""
    assert component(name)["additionalProperties"] is False


@pytest.mark.parametrize(
    ("name", "field", "pattern"),
    [
        ("ChargeRequest", "amount", AMOUNT_PATTERN),
        ("CaptureRequest", "amount", AMOUNT_PATTERN),
        ("LimitsUpdate", "per_charge", AMOUNT_PATTERN),
        ("PriceUpdate", "input_per_mtok", AMOUNT_PATTERN),
        ("AdjustmentRequest", "amount", SIGNED_AMOUNT_PATTERN),
        ("LedgerEntry", "amount", MONEY_OUT_PATTERN),
        ("BudgetStatus", "held", MONEY_OUT_PATTERN),
        ("WindowAmounts", "day", MONEY_OUT_PATTERN),
        ("TopSpender", "spent", MONEY_OUT_PATTERN),
    ],
)
def test_money_fields_carry_their_decimal_pattern(name: str, field: str, pattern: str) -> None:
    """Money is a decimal string with at most 9 fractional digits, in requests and answers."""
    assert string_branch(component(name)["properties"][field])["pattern"] == pattern


@pytest.mark.parametrize(
    ("name", "field", "prefix"),
    [
        ("Agent", "id", "agt_"),
        ("Agent", "team_id", "team_"),
        ("Team", "id", "team_"),
        ("KeyInfo", "id", "key_"),
        ("LedgerEntry", "id", "ent_"),
        ("Hold", "id", "hold_"),
        ("AuditEvent", "actor_key_id", "key_"),
    ],
)
def test_ids_in_answers_carry_their_shape(name: str, field: str, prefix: str) -> None:
    """Ids are opaque, but each kind has its prefix, and the document shows it."""
    assert string_branch(component(name)["properties"][field])["pattern"].startswith(f"^{prefix}")


def test_cursors_and_path_ids_carry_their_shape() -> None:
    """Path ids and cursors (in queries and in answers) have a documented shape."""
    [spec] = [s for _, _, s in OPERATIONS if s["operationId"] == "listAgentKeys"]
    parameters = {p["name"]: p for p in spec["parameters"]}
    assert parameters["agent_id"]["schema"]["pattern"].startswith("^agt_")
    assert "pattern" in parameters["cursor"]["schema"]
    assert string_branch(component("AgentPage")["properties"]["next_cursor"])["pattern"]


@pytest.mark.parametrize("operation", OPERATIONS, ids=ids)
def test_query_parameters_are_never_null(operation: tuple) -> None:
    """A query string has no null: an optional filter is left out, and ``kind=null`` is the text
    "null", refused like any value outside the enum, so no parameter offers null."""
    _, _, spec = operation
    for parameter in spec.get("parameters", []):
        if parameter["in"] == "query":
            schema = parameter["schema"]
            assert "null" not in str(schema.get("type")), parameter
            assert None not in schema.get("enum", []), parameter
            assert not {"oneOf", "anyOf"} & set(schema), parameter


def test_verify_routes_name_their_own_deadline() -> None:
    """The verify routes are answered within LEDGER_VERIFY_TIMEOUT_SECONDS, and say so."""
    for operation_id in ("verifyLedger", "verifyCheckpoint"):
        [spec] = [s for _, _, s in OPERATIONS if s["operationId"] == operation_id]
        assert "LEDGER_VERIFY_TIMEOUT_SECONDS" in spec["responses"]["503"]["description"]


def test_times_are_rfc_3339() -> None:
    """Times in answers are marked date-time (msgspec leaves zone-less datetimes plain)."""
    assert component("LedgerEntry")["properties"]["created_at"]["format"] == "date-time"


async def test_the_served_document_is_this_one(client: AsyncTestClient) -> None:
    """/schema/openapi.json serves the finished document, not Litestar's raw one."""
    served = (await client.get("/schema/openapi.json")).json()
    assert served == DOCUMENT

"""deploy/ and docker-compose.yml: Prometheus's rules and scrape config, Grafana's dashboard,
and the compose services that run them behind the ``monitoring`` profile.

No Docker engine runs here, so the compose file is checked as data; the rules are checked by
promtool when it is installed (``promtool`` on PATH or ``$PROMTOOL``; Debian's ``prometheus``
package has it), and always against the metric names the service really exposes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "agent-ledger.json"
OUR_METRIC = re.compile(r"\bagent_ledger_[a-z_]+\b")
CONTRACT_METRICS = {
    "agent_ledger_http_requests_total",
    "agent_ledger_http_request_duration_seconds_bucket",
    "agent_ledger_decisions_total",
    "agent_ledger_spend_total",
    "agent_ledger_open_holds",
}
# Outbox lag and delivery failures (issue 16), on the dashboard too.
DELIVERY_METRICS = {
    "agent_ledger_outbox_oldest_pending_seconds",
    "agent_ledger_webhook_deliveries",
    "agent_ledger_webhook_delivery_failures_total",
    "agent_ledger_webhook_oldest_pending_seconds",
    "agent_ledger_webhook_oldest_due_seconds",
}
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian: the prometheus package)")
    return found


@pytest.fixture(scope="module")
async def exposed(client: AsyncTestClient) -> set[str]:
    """Every sample name the service's /metrics can answer with, read from a real scrape."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, []))
    return names


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_every_alert_is_complete_and_names_only_real_metrics(exposed: set[str]) -> None:
    """Each rule has a severity and a summary, and every agent_ledger_* name in its expression
    is one the service exposes (a renamed metric would silently never fire)."""
    found = rules()
    assert len(found) >= 6
    for rule in found:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        names = set(OUR_METRIC.findall(rule["expr"]))
        assert names <= exposed, f"{rule['alert']}: {names - exposed}"
    mentioned = {n for rule in found for n in OUR_METRIC.findall(rule["expr"])}
    assert "agent_ledger_database_up" in mentioned
    assert "agent_ledger_outbox_oldest_pending_seconds" in mentioned
    # A receiver down for hours, or no worker delivering, must page someone.
    assert "agent_ledger_webhook_oldest_pending_seconds" in mentioned
    assert "agent_ledger_webhook_oldest_due_seconds" in mentioned


def test_the_dashboard_shows_the_contracts_metrics_and_only_real_ones(exposed: set[str]) -> None:
    """The dashboard parses, reads from the provisioned data source, and queries only metrics
    the service exposes, the contract's and the deliveries' among them; its panel ids are
    unique (Grafana keys a panel's state by it)."""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "agent-ledger"
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), ids
    used = {n for expr in dashboard_expressions() for n in OUR_METRIC.findall(expr)}
    assert used <= exposed, used - exposed
    assert CONTRACT_METRICS | DELIVERY_METRICS <= used, (CONTRACT_METRICS | DELIVERY_METRICS) - used


def test_compose_runs_prometheus_and_grafana_behind_a_profile() -> None:
    """``docker compose up`` starts what it did before; ``--profile monitoring`` adds
    Prometheus and Grafana, each mounting files that exist, on this host's loopback only."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("postgres", "migrate", "api"):
        assert "profiles" not in services[name], name
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert scrape["rule_files"] == ["alerts.yml"]


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    """promtool checks the rules, the config, and runs the alert unit tests (alerts.test.yml:
    each alert fires when, and only when, it should)."""
    tool = promtool()
    folder = DEPLOY / "prometheus"
    for command in (
        [tool, "check", "rules", "alerts.yml"],
        [tool, "check", "config", "prometheus.yml"],
        [tool, "test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

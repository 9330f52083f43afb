"""The operations assets in deploy/: the Grafana dashboard and the
Prometheus alerting rules ask only for metrics a real worker exports (a
renamed metric fails here, not silently on an operator's screen), the
dashboard is well formed and its queries parse, and every alert has a
firing and a silent unit test and a runbook entry in the README.

A real `mesh-worker run` against PostgreSQL and librdkafka's mock cluster
answers /metrics; promtool (Debian's prometheus package) parses PromQL."""

import json
import os
import re
import subprocess
import tempfile
import urllib.request
import uuid

import pytest
import yaml

import harness

DASHBOARD = os.path.join(harness.SOURCE_DIR, "deploy", "grafana",
                         "mesh-worker.json")
RULES = os.path.join(harness.SOURCE_DIR, "deploy", "prometheus",
                     "alerts.yml")
RULES_TEST = os.path.join(harness.SOURCE_DIR, "deploy", "prometheus",
                          "alerts_test.yml")
README = os.path.join(harness.SOURCE_DIR, "README.md")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Words of PromQL that look like names but are not metrics.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on",
            "ignoring", "group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr):
    """The metric names a PromQL expression selects (Grafana variables
    allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""',
                  expr)
    text = re.sub(r"\{[^}]*\}", " ", text)          # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)         # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)"
                  r"\s*\([^)]*\)", " ", text)       # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)        # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?",
                         text):
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def template_expr(query):
    """The PromQL inside a Grafana variable query such as
    label_values(metric{...}, label); None when it selects no metric."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if m:
        return m.group(1)
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    return m.group(1) if m else None


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def load_rules():
    with open(RULES) as f:
        return [rule for group in yaml.safe_load(f)["groups"]
                for rule in group["rules"]]


def dashboard_exprs(dashboard):
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query":
            if isinstance(query, dict):
                query = query["query"]
            expr = template_expr(query)
            assert expr is not None, "unknown variable query %r" % query
            exprs.append(expr)
    return exprs


@pytest.fixture(scope="module")
def exported(pg):
    """The metric names in a real worker's /metrics answer."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.query("CREATE DATABASE " + name)
    url = "postgresql://postgres@127.0.0.1:%d/%s" % (pg.port, name)
    kafka = harness.MockKafka(partitions=4)
    worker = None
    try:
        worker = harness.Worker(kafka.bootstrap, url, env={
            "MESH_WORKER_HTTP_ADDR": "127.0.0.1:0"}).start()

        def listening():
            for line in worker.log_text().splitlines():
                if '"health and metrics listening"' in line:
                    return json.loads(line)["port"]
            assert worker.alive(), worker.log_text()
            return None
        port = harness.wait_for(listening, 60, "the metrics listener")
        base = "http://127.0.0.1:%d" % port

        def ready():
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False
        harness.wait_for(ready, 60, "readiness")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        if worker is not None:
            worker.destroy()
        kafka.destroy()
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\w+)$", line)
        if m:
            names.add(m.group(1))
            if m.group(2) in ("histogram", "summary"):
                names.update(m.group(1) + s for s in ("_sum", "_count"))
            if m.group(2) == "histogram":
                names.add(m.group(1) + "_bucket")
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate('
        'mesh_worker_batch_duration_seconds_bucket{job=~"$job"}'
        '[$__rate_interval])))') == {
            "mesh_worker_batch_duration_seconds_bucket"}
    assert metric_names(
        'sum by (job, namespace) (a_total) > 1e3 and on (job) '
        'deriv(sum without (instance) (b)[10m:1m]) > 0 unless '
        'c offset 5m == bool 1') == {"a_total", "b", "c"}
    assert metric_names('absent(mesh_workr_ready{x="and"})') == {
        "mesh_workr_ready"}
    assert template_expr('label_values(mesh_worker_ready{job=~"$job"}, '
                         'instance)') == 'mesh_worker_ready{job=~"$job"}'


def test_dashboard_and_rules_use_only_exported_metrics(exported):
    dashboard = {n for e in dashboard_exprs(load_dashboard())
                 for n in metric_names(e)}
    rules = {n for r in load_rules() for n in metric_names(r["expr"])}
    assert "mesh_worker_ready" in exported
    assert "mesh_worker_batch_duration_seconds_bucket" in exported
    assert len(dashboard) >= 15 and len(rules) >= 10
    unknown = {"dashboard": sorted(dashboard - exported),
               "rules": sorted(rules - exported)}
    assert unknown == {"dashboard": [], "rules": []}, \
        "metrics the worker does not export"


def test_dashboard_is_importable_and_consistent():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "mesh-worker" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, "%s overlaps" % panel["title"]
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], "%s has no query" % panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", DATASOURCE) == DATASOURCE
    # Each alert points at the panel that shows what it watches.
    described = " ".join(p.get("description", "")
                         for p in dashboard["panels"])
    for rule in load_rules():
        assert rule["alert"] in described, rule["alert"]


def test_dashboard_queries_parse():
    """promtool parses every dashboard query, as recording rules with the
    Grafana variables given values."""
    exprs = dashboard_exprs(load_dashboard())
    rules = []
    for i, expr in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "1m")
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
        rules.append({"record": "dashboard:query_%d" % i, "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]},
                       f)
        f.flush()
        result = subprocess.run(["promtool", "check", "rules", f.name],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS: %d rules found" % len(rules) in result.stdout


def test_every_alert_is_tested_both_ways_and_has_a_runbook_entry():
    with open(RULES_TEST) as f:
        tests = yaml.safe_load(f)["tests"]
    fired, silent = set(), set()
    for test in tests:
        for case in test["alert_rule_test"]:
            if not case.get("exp_alerts"):
                silent.add(case["alertname"])
            for alert in case.get("exp_alerts") or []:
                fired.add((case["alertname"],
                           alert["exp_labels"]["severity"]))
    with open(README) as f:
        readme = f.read()
    runbook = readme.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    headings = set(re.findall(r"^### (\S+)$", runbook, re.M))
    alerts = set()
    for rule in load_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        alerts.add(name)
        assert severity in ("critical", "warning"), name
        assert (name, severity) in fired, "%s (%s) never fires in a test" % (
            name, severity)
        assert name in silent, "%s is never shown silent" % name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        assert rule["annotations"]["runbook"] == \
            "README.md#" + name.lower(), name
    assert headings == alerts, "Runbook headings and alerts differ"

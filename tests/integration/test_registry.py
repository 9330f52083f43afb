"""The worker with a Schema Registry (SPEC §3 "Wire format"): schema
evolution, the failure classes of the registry, start-up checks, the
schema cache, and produce/tail.  Runs against tests/registry/registry.py
(a Confluent-compatible registry with failure injection), a real
PostgreSQL and librdkafka's mock cluster; requests are written and events
read with python3-avro, independently of the worker's codec."""

import json
import os
import subprocess
import tempfile
import time

import pytest

import harness
import registry_harness as rh
from harness import TOPIC_DLQ, TOPIC_EVENTS, TOPIC_REQUESTS, request

EVENTS_SUBJECT = TOPIC_EVENTS + "-value"
REQUESTS_SUBJECT = TOPIC_REQUESTS + "-value"


@pytest.fixture
def registries():
    """Starts test registries on demand: registries("--compatibility",
    "NONE"), registries(user=..., password=...)."""
    started = []

    def start(*args, **kwargs):
        started.append(rh.Registry(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.destroy()


@pytest.fixture
def registry(registries):
    return registries()


def registry_env(registry, **extra):
    env = {"MESH_WORKER_SCHEMA_REGISTRY_URL": registry.url,
           "MESH_WORKER_SCHEMA_REGISTRY_TIMEOUT": "2s"}
    env.update(extra)
    return env


def wait_joined(worker, timeout=60):
    harness.wait_for(lambda: "partitions assigned" in worker.log_text(),
                     timeout, "the worker to join its group")


def events_of(registry, messages):
    """{request_id: (record name, datum, schema id)} of customer.events."""
    schema = registry.schema(registry.latest(EVENTS_SUBJECT)["id"])
    out = {}
    for m in messages:
        schema_id, name, datum = rh.decode(schema, m["value"])
        out[datum["request_id"]] = (name, datum, schema_id)
    return out


def with_sales_channel(fields):
    fields.append({"name": "sales_channel", "type": ["null", "string"],
                   "default": None})


def without_optional_fields(fields):
    fields[:] = [f for f in fields
                 if f["name"] not in ("policy_template_id", "monitor_mode",
                                      "apply_global_rules")]


def licenses_as_string(fields):
    for f in fields:
        if f["name"] == "licenses":
            f["type"] = "string"


def test_evolution_matrix_provisions_compatible_writers_and_dead_letters_a_type_change(  # noqa: E501
        db, kafka, workers, registries):
    registry = registries("--compatibility", "NONE")
    id_a = registry.register(REQUESTS_SUBJECT, rh.schema_file(
        "customer.requests"))
    id_b = registry.register(REQUESTS_SUBJECT,
                             rh.request_schema(with_sales_channel))
    id_c = registry.register(REQUESTS_SUBJECT,
                             rh.request_schema(without_optional_fields))
    id_d = registry.register(REQUESTS_SUBJECT,
                             rh.request_schema(licenses_as_string))
    a = request(service="MESH_365", delivery_destination=None,
                monitor_mode=True, policy_template_id="tpl-7")
    b = request()
    b["sales_channel"] = "partner-portal"
    c = request()
    for name in ("policy_template_id", "monitor_mode", "apply_global_rules"):
        del c[name]
    d = request()
    d["licenses"] = "25"
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(rh.schema_file("customer.requests"), id_a, a),
         []),
        (b"msp-1", rh.encode(rh.request_schema(with_sales_channel), id_b, b),
         []),
        (b"msp-1", rh.encode(rh.request_schema(without_optional_fields),
                             id_c, c), []),
        (b"msp-1", rh.encode(rh.request_schema(licenses_as_string), id_d, d),
         [("traceparent", b"kept")]),
    ])
    # The first URL is dead: every request goes on to the second.
    dead = "http://127.0.0.1:%d" % harness.free_port()
    w = workers(kafka.bootstrap, db.url, **registry_env(
        registry, MESH_WORKER_SCHEMA_REGISTRY_URL="%s,%s/" % (
            dead, registry.url)))
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 3)
    dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ,
                             lambda ms: len(ms) >= 1)
    by_request = events_of(registry, events)
    events_id = registry.latest(EVENTS_SUBJECT)["id"]
    for r in (a, b, c):
        name, datum, schema_id = by_request[r["request_id"]]
        assert (name, schema_id) == ("CustomerCreated", events_id), (
            r["request_id"], name, schema_id)
        assert datum["company_name"] == r["company_name"]
    assert by_request[a["request_id"]][1]["monitor_mode"] is True
    assert by_request[a["request_id"]][1]["policy_template_id"] == "tpl-7"
    # (c) lacked them: the reader's defaults.
    created_c = by_request[c["request_id"]][1]
    assert created_c["monitor_mode"] is False
    assert created_c["policy_template_id"] is None
    assert created_c["apply_global_rules"] is True
    assert d["request_id"] not in by_request
    assert len(dlq) == 1
    headers = dlq[0]["headers"]
    assert headers["dlq.reason"] == b"schema-incompatible", headers
    assert b"licenses" in headers["dlq.error"], headers["dlq.error"]
    assert headers["traceparent"] == b"kept"
    assert dlq[0]["value"][1:5] == id_d.to_bytes(4, "big")
    assert db.query("SELECT count(*) FROM customers")[0][0] == 3
    assert w.stop() == 0


def test_registry_down_mid_stream_holds_messages_then_resumes(
        db, kafka, workers, registry):
    schema = rh.schema_file("customer.requests")
    first_id = registry.register(REQUESTS_SUBJECT, schema)
    later_id = registry.register("other-subject",
                                 rh.request_schema(with_sales_channel))
    w = workers(kafka.bootstrap, db.url, **registry_env(registry))
    wait_joined(w)
    first = [request() for _ in range(5)]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(schema, first_id, r), []) for r in first])
    harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                       lambda ms: len(ms) >= 5)
    # The registry answers 503 to every schema fetch, then hangs.
    registry.fail(503, -1, "/schemas/ids/")
    later = [request() for _ in range(20)]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(rh.request_schema(with_sales_channel), later_id,
                             dict(r, sales_channel=None)), [])
        for r in later])
    harness.wait_for(lambda: w.log_text().count(
        "could not process a batch") >= 2, 60, "the batch to be held")
    registry.reset()
    registry.pause()
    time.sleep(5)
    assert w.alive()
    assert db.query("SELECT count(*) FROM requests")[0][0] == 5
    registry.resume()
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 25)
    by_request = events_of(registry, events)
    assert all(by_request[r["request_id"]][0] == "CustomerCreated"
               for r in first + later)
    assert len(events) == 25
    assert db.query("SELECT count(*) FROM customers")[0][0] == 25
    dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ, lambda ms: True,
                             timeout=10)
    assert dlq == [], [m["headers"] for m in dlq]
    assert "unknown-schema" not in w.log_text()
    assert w.stop() == 0


def test_unknown_schema_id_goes_to_the_dlq_and_the_partition_moves_on(
        db, kafka, workers, registry):
    schema = rh.schema_file("customer.requests")
    known = registry.register(REQUESTS_SUBJECT, schema)
    good = request()
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(schema, 9999, request()), [], 0),
        (b"msp-1", rh.encode(schema, known, good), [], 0)])
    w = workers(kafka.bootstrap, db.url, **registry_env(registry))
    dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ,
                             lambda ms: len(ms) >= 1)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 1)
    assert dlq[0]["headers"]["dlq.reason"] == b"unknown-schema"
    assert b"9999" in dlq[0]["headers"]["dlq.error"]
    assert events_of(registry, events)[good["request_id"]][0] == \
        "CustomerCreated"
    assert w.stop() == 0


def test_wrong_credentials_stop_start_up_with_a_clear_error(
        db, kafka, workers, registries):
    registry = registries(user="mesh", password="s3cret-pass")
    w = workers(kafka.bootstrap, db.url, **registry_env(
        registry, MESH_WORKER_SCHEMA_REGISTRY_USER_INFO="mesh:wrong-pass"))
    assert w.proc.wait(timeout=90) == 2
    log = w.log_text()
    assert "refused the credentials" in log, log[-2000:]
    assert "MESH_WORKER_SCHEMA_REGISTRY_USER_INFO" in log
    assert "wrong-pass" not in log

    secret = os.path.join(w.dir, "user_info")
    with open(secret, "w") as f:
        f.write("mesh:s3cret-pass\n")
    good = workers(kafka.bootstrap, db.url, **registry_env(
        registry, MESH_WORKER_SCHEMA_REGISTRY_USER_INFO_FILE=secret))
    wait_joined(good)
    assert registry.latest(EVENTS_SUBJECT)["id"] >= 1
    assert "s3cret-pass" not in good.log_text()
    assert good.stop() == 0


def test_auto_registration_off_refuses_an_unregistered_schema(
        db, kafka, workers, registry):
    env = registry_env(registry,
                       MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER="false")
    w = workers(kafka.bootstrap, db.url, **env)
    assert w.proc.wait(timeout=90) == 2
    assert ("is not registered under subject %s" % EVENTS_SUBJECT
            in w.log_text()), w.log_text()[-2000:]

    registry.register(EVENTS_SUBJECT, rh.schema_file("customer.events"))
    w = workers(kafka.bootstrap, db.url, **env)
    wait_joined(w)
    assert w.stop() == 0


def test_ten_thousand_messages_of_one_schema_fetch_it_once(
        db, kafka, workers, registry):
    schema = rh.schema_file("customer.requests")
    schema_id = registry.register(REQUESTS_SUBJECT, schema)
    reqs = [request(msp_id="msp-%d" % (i % 13)) for i in range(10000)]
    harness.produce_all(kafka.bootstrap, [
        (r["msp_id"].encode(), rh.encode(schema, schema_id, r), [])
        for r in reqs])
    started = time.monotonic()
    w = workers(kafka.bootstrap, db.url, **registry_env(registry))
    harness.wait_for(
        lambda: db.query("SELECT count(*) FROM requests")[0][0] == 10000
        if "partitions assigned" in w.log_text() else False,
        300, "10,000 requests to be claimed", interval=1)
    print("10,000 Confluent-framed requests provisioned in %.1f s"
          % (time.monotonic() - started))
    fetches = registry.stats().get("GET /schemas/ids/{id}", 0)
    assert fetches == 1, registry.stats()
    assert w.stop() == 0


def test_produce_and_tail_speak_the_registry_format(kafka, registry):
    env = dict(os.environ)
    env.update(registry_env(registry))
    env["MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    env["MESH_WORKER_LOG_LEVEL"] = "warn"
    r = request()
    produced = subprocess.run(
        [harness.WORKER, "produce"], input=json.dumps(r), env=env,
        capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    requests_id = registry.latest(REQUESTS_SUBJECT)["id"]
    tailed = subprocess.run(
        [harness.WORKER, "tail", "--topic", TOPIC_REQUESTS, "--max", "1",
         "--timeout", "30s"], env=env, capture_output=True, text=True,
        timeout=60)
    assert tailed.returncode == 0, tailed.stderr
    line = json.loads(tailed.stdout.splitlines()[0])
    assert line["schema_id"] == requests_id
    assert line["value"]["request_id"] == r["request_id"]
    messages = harness.read_topic(kafka.bootstrap, TOPIC_REQUESTS,
                                  lambda ms: len(ms) >= 1)
    schema_id, name, datum = rh.decode(registry.schema(requests_id),
                                       messages[0]["value"])
    assert (schema_id, name) == (requests_id, "CustomerRequested")
    assert datum["company_name"] == r["company_name"]


def previous_union(topic):
    """The topic's union as the release before customer updates published
    it: without CustomerUpdateRequested, CustomerUpdated and STALE_UPDATE."""
    doc = json.loads(rh.schema_file(topic))
    doc = [r for r in doc if r["name"] not in ("CustomerUpdateRequested",
                                                "CustomerUpdated")]

    def drop_symbol(node):
        if isinstance(node, dict):
            if node.get("name") == "RejectionCode":
                node["symbols"].remove("STALE_UPDATE")
            for value in node.values():
                drop_symbol(value)
        elif isinstance(node, list):
            for value in node:
                drop_symbol(value)

    drop_symbol(doc)
    return json.dumps(doc)


def test_the_union_with_updates_registers_over_the_previous_one(
        db, kafka, workers, registries):
    """Rolled out as README says: the previous unions are registered, the
    subjects are BACKWARD_TRANSITIVE, the worker registers the new events
    union as the next version, the portal the new requests union, and the
    worker reads requests written with either."""
    registry = registries("--compatibility", "BACKWARD_TRANSITIVE")
    old_requests = previous_union("customer.requests")
    old_requests_id = registry.register(REQUESTS_SUBJECT, old_requests)
    registry.register(EVENTS_SUBJECT, previous_union("customer.events"))
    created = request()
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(old_requests, old_requests_id, created), [])])
    w = workers(kafka.bootstrap, db.url, **registry_env(registry))
    wait_joined(w)
    assert registry.latest(EVENTS_SUBJECT)["version"] == 2
    new_requests_id = registry.register(REQUESTS_SUBJECT,
                                        rh.schema_file("customer.requests"))
    assert registry.latest(REQUESTS_SUBJECT)["version"] == 2
    update = harness.update_request(harness.customer_id(
        created["request_id"]), licenses=30)
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", rh.encode(rh.schema_file("customer.requests"),
                             new_requests_id, update,
                             record="CustomerUpdateRequested"), [])])
    events = events_of(registry, harness.read_topic(
        kafka.bootstrap, TOPIC_EVENTS, lambda ms: len(ms) >= 2))
    events_id = registry.latest(EVENTS_SUBJECT)["id"]
    assert events[created["request_id"]][:1] == ("CustomerCreated",)
    name, datum, schema_id = events[update["request_id"]]
    assert (name, schema_id) == ("CustomerUpdated", events_id)
    assert datum["changes"] == [{"field": "licenses", "old_value": "25",
                                 "new_value": "30"}]
    assert w.stop() == 0


def test_a_forward_subject_refuses_the_new_union_at_start_up(
        db, kafka, workers, registries):
    """FORWARD asks old readers to read the new union, which they cannot:
    the worker does not start and says why."""
    registry = registries("--compatibility", "FORWARD")
    registry.register(EVENTS_SUBJECT, previous_union("customer.events"))
    w = workers(kafka.bootstrap, db.url, **registry_env(registry))
    assert w.proc.wait(timeout=90) == 2
    assert "incompatible with the versions already registered" in \
        w.log_text(), w.log_text()[-2000:]

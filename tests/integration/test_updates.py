"""Changes to customers after creation (CustomerUpdateRequested), end to
end on librdkafka's mock cluster: every rule's outcome as the MSP sees it,
idempotency and conflicts, an update in the batch of its customer's
creation or termination, per-customer order, and a trial bought early.
One PostgreSQL, one mock cluster and one worker serve the whole file;
each test works on customers of its own.  Events are decoded with
python3-avro against schemas/."""

import json
import subprocess
import time
import uuid

import pytest

import harness
from harness import TOPIC_EVENTS, request, update_request

DAY_MS = 86400 * 1000
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FAST = {"MESH_WORKER_SCHEDULER_INTERVAL": "100ms"}


@pytest.fixture(scope="module")
def stack():
    """One database, one mock cluster and one worker for the file."""
    server = harness.Postgres().start()
    kafka = harness.MockKafka(partitions=8)
    worker = None
    try:
        server.query("CREATE DATABASE updates")
        url = server.database_url("updates")
        worker = harness.Worker(kafka.bootstrap, url, env=FAST,
                                name="updates").start()
        yield {"kafka": kafka, "url": url, "worker": worker,
               "avro": harness.Avro(), "server": server}
    finally:
        if worker is not None:
            print("---- log of the worker (last 30 lines) ----")
            print("\n".join(worker.log_text().splitlines()[-30:]))
            worker.destroy()
        kafka.destroy()
        server.destroy()


def query(stack, sql, *params):
    import psycopg2
    conn = psycopg2.connect(stack["url"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def produce(stack, records):
    """Produces (record name, datum) pairs in order, keyed by MSP id."""
    harness.produce_all(stack["kafka"].bootstrap, [
        (datum["msp_id"].encode(), stack["avro"].encode(name, datum),
         [("traceparent", TRACEPARENT)]) for name, datum in records])


def events_of(stack, request_ids, count, timeout=120):
    """The decoded events (name, datum, message) that answer request_ids
    (by request id or by the customers they created), once there are at
    least count of them, in the order of their partition."""
    wanted = set(request_ids)
    customers = {harness.customer_id(r) for r in request_ids}

    def mine(messages):
        out = []
        for m in messages:
            name, datum = stack["avro"].decode(m["value"])
            if (datum.get("request_id") in wanted
                    or datum.get("customer_id") in customers):
                out.append((name, datum, m))
        return out

    found = harness.read_topic(stack["kafka"].bootstrap, TOPIC_EVENTS,
                               lambda ms: len(mine(ms)) >= count,
                               timeout=timeout)
    return mine(found)


def outcome(events, request_id):
    """The one event answering request_id."""
    answers = [(n, d, m) for n, d, m in events
               if d.get("request_id") == request_id and n != "TrialConverted"]
    assert len(answers) == 1, (request_id, [a[0] for a in answers])
    return answers[0]


def errors(event):
    name, datum, _ = event
    assert name == "CustomerRejected", (name, datum)
    return [(e["field"], e["code"]) for e in datum["errors"]]


def create(stack, *datums):
    produce(stack, [("CustomerRequested", d) for d in datums])
    events_of(stack, [d["request_id"] for d in datums], len(datums))
    return [harness.customer_id(d["request_id"]) for d in datums]


def test_every_rule_of_an_update_answers_the_msp(stack):
    now = int(time.time() * 1000)
    gateway, trial, nfr = (
        request(),
        request(service="MESH_365", monitor_mode=True, account_type="TRIAL",
                delivery_destination=None),
        request(service="MESH_UNIFIED", account_type="NFR", licenses=10,
                primary_domain="nfr-%s.msp.example" % uuid.uuid4().hex[:12]))
    g, t, n = create(stack, gateway, trial, nfr)
    added = "added-%s.example" % uuid.uuid4().hex[:12]
    cases = [
        (update_request(t, source="M365_SYNC", licenses=30,
                        observed_at=now), None),
        (update_request(t, source="M365_SYNC", licenses=20,
                        observed_at=now - 60000),
         [("licenses", "STALE_UPDATE")]),
        (update_request(t, monitor_mode=False), None),
        (update_request(g, monitor_mode=True),
         [("monitor_mode", "MONITOR_MODE_NOT_SUPPORTED")]),
        (update_request(g, delivery_destination=""),
         [("delivery_destination", "DELIVERY_DESTINATION_REQUIRED")]),
        (update_request(g, add_domains=[added.upper()],
                        delivery_destination="MX2.Example.com:2525"), None),
        (update_request(g, add_domains=[trial["primary_domain"]]),
         [("add_domains", "DOMAIN_ALREADY_PROVISIONED")]),
        (update_request(g, remove_domains=[gateway["primary_domain"]],
                        licenses=0, source="MSP"),
         [("licenses", "INVALID_FIELD")]),
        (update_request(g, remove_domains=[gateway["primary_domain"]],
                        add_domains=[trial["primary_domain"]],
                        monitor_mode=True),
         [("monitor_mode", "MONITOR_MODE_NOT_SUPPORTED"),
          ("add_domains", "DOMAIN_ALREADY_PROVISIONED"),
          ("remove_domains", "INVALID_FIELD")]),
        (update_request(n, licenses=51, add_domains=["shop.other.example"]),
         [("licenses", "NFR_LICENSE_LIMIT_EXCEEDED"),
          ("add_domains", "NFR_DOMAIN_NOT_MSP_DOMAIN")]),
        (update_request(g, source="M365_SYNC", licenses=26,
                        two_factor_required=True),
         [("two_factor_required", "INVALID_FIELD")]),
        (update_request(str(uuid.uuid4()), licenses=5),
         [("customer_id", "UNKNOWN_CUSTOMER")]),
        (update_request(g, msp_id="msp-other", licenses=5),
         [("customer_id", "NOT_CUSTOMER_OWNER")]),
        (update_request(g, account_type="BUY_NOW"),
         [("account_type", "INVALID_FIELD")]),
    ]
    produce(stack, [("CustomerUpdateRequested", u) for u, _ in cases])
    events = events_of(stack, [u["request_id"] for u, _ in cases],
                       len(cases))
    for u, want in cases:
        event = outcome(events, u["request_id"])
        if want is not None:
            assert errors(event) == want, (u, event[1])
            assert event[2]["key"] == u["request_id"].encode()
            continue
        name, datum, msg = event
        assert name == "CustomerUpdated", datum
        assert datum["event_id"] == harness.event_id("CustomerUpdated",
                                                     u["request_id"])
        assert msg["key"] == u["customer_id"].encode()
        assert msg["headers"]["event_type"] == b"CustomerUpdated"
        assert msg["headers"]["request_id"] == u["request_id"].encode()
        assert msg["headers"]["traceparent"] == TRACEPARENT
        assert datum["source"] == u["source"]
    by_id = {u["request_id"]: outcome(events, u["request_id"])[1]
             for u, _ in cases}
    sync = by_id[cases[0][0]["request_id"]]
    assert sync["changes"] == [{"field": "licenses", "old_value": "25",
                                "new_value": "30"}]
    assert (sync["licenses"], sync["account_type"], sync["billable"],
            sync["monitor_mode"]) == (30, "TRIAL", False, True)
    assert by_id[cases[2][0]["request_id"]]["changes"] == [
        {"field": "monitor_mode", "old_value": "true", "new_value": "false"}]
    domains = by_id[cases[5][0]["request_id"]]
    assert domains["changes"] == [
        {"field": "delivery_destination",
         "old_value": gateway["delivery_destination"],
         "new_value": "mx2.example.com:2525"},
        {"field": "additional_domains", "old_value": "[]",
         "new_value": json.dumps([added], separators=(",", ":"))}]
    assert domains["additional_domains"] == [added]
    assert domains["primary_domain"] == gateway["primary_domain"]
    # The stale sync changed nothing; the operator sees the history.
    assert query(stack, "SELECT licenses FROM customers WHERE customer_id = %s",
                 t) == [(30,)]
    shown = subprocess.run(
        [harness.WORKER, "customers", "show", t], env=stack["worker"].env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)["changes"]
    assert [h["request_id"] for h in history] == [
        cases[0][0]["request_id"], cases[2][0]["request_id"]]
    assert history[0]["source"] == "M365_SYNC"
    assert history[0]["changes"][0]["field"] == "licenses"


def test_redelivered_update_changes_nothing_and_other_content_conflicts(
        stack):
    c, = create(stack, request())
    first = update_request(c, licenses=40)
    again = dict(first, requested_at=first["requested_at"] + 5000)
    other = dict(first, licenses=41)
    produce(stack, [("CustomerUpdateRequested", u)
                    for u in (first, again, other)])
    events_of(stack, [first["request_id"]], 2)
    time.sleep(2)
    events = events_of(stack, [first["request_id"]], 2)
    assert sorted(n for n, _, _ in events) == ["CustomerRejected",
                                              "CustomerUpdated"], events
    rejected, = [e for e in events if e[0] == "CustomerRejected"]
    assert errors(rejected) == [("request_id", "REQUEST_ID_CONFLICT")]
    assert query(stack, "SELECT licenses FROM customers WHERE customer_id = %s",
                 c) == [(40,)]
    assert query(stack, "SELECT outcome, conflicts FROM requests "
                 "WHERE request_id = %s", first["request_id"]) == [
        ("UPDATED", 1)]


def test_a_creation_and_its_updates_in_one_batch_keep_their_order(stack):
    created = request(account_type="TRIAL")
    c = harness.customer_id(created["request_id"])
    updates = [update_request(c, licenses=30 + i, observed_at=1000 + i)
               for i in range(5)]
    produce(stack, [("CustomerRequested", created)]
            + [("CustomerUpdateRequested", u) for u in updates])
    events = events_of(stack, [created["request_id"]]
                       + [u["request_id"] for u in updates], 6)
    assert [n for n, _, _ in events] == ["CustomerCreated"] + \
        ["CustomerUpdated"] * 5
    assert [d["licenses"] for _, d, _ in events] == [25, 30, 31, 32, 33, 34]
    assert [d["request_id"] for _, d, _ in events[1:]] == [
        u["request_id"] for u in updates]


def test_an_update_after_a_termination_is_refused_in_and_across_batches(
        stack):
    created = request()
    c, = create(stack, created)
    before = update_request(c, two_factor_required=True)
    term = {"request_id": str(uuid.uuid4()),
            "requested_at": int(time.time() * 1000),
            "requested_by": "user@msp.example", "msp_id": "msp-1",
            "customer_id": c, "effective_at": None}
    after = update_request(c, licenses=99)
    produce(stack, [("CustomerUpdateRequested", before),
                    ("CustomerTerminationRequested", term),
                    ("CustomerUpdateRequested", after)])
    ids = [created["request_id"], before["request_id"], term["request_id"],
           after["request_id"]]
    events = events_of(stack, ids, 4)
    on_customer = [n for n, d, m in events if m["key"] == c.encode()]
    assert on_customer == ["CustomerCreated", "CustomerUpdated",
                           "CustomerTerminated"], events
    assert errors(outcome(events, after["request_id"])) == [
        ("customer_id", "ALREADY_TERMINATED")]
    later = update_request(c, licenses=98)
    produce(stack, [("CustomerUpdateRequested", later)])
    events = events_of(stack, ids + [later["request_id"]], 5)
    assert errors(outcome(events, later["request_id"])) == [
        ("customer_id", "ALREADY_TERMINATED")]
    assert query(stack, "SELECT licenses, two_factor_required FROM customers "
                 "WHERE customer_id = %s", c) == [(25, True)]


def test_a_trial_bought_early_converts_once_and_others_with_new_licenses(
        stack):
    bought, grown = request(account_type="TRIAL"), request(account_type="TRIAL")
    b, g = create(stack, bought, grown)
    buy = update_request(b, account_type="BUY_NOW")
    grow = update_request(g, licenses=40)
    produce(stack, [("CustomerUpdateRequested", buy),
                    ("CustomerUpdateRequested", grow)])
    events = events_of(stack, [bought["request_id"], buy["request_id"],
                               grow["request_id"]], 4)
    on_b = [(n, d) for n, d, m in events if m["key"] == b.encode()]
    assert [n for n, _ in on_b] == ["CustomerCreated", "CustomerUpdated",
                                    "TrialConverted"]
    updated, converted = on_b[1][1], on_b[2][1]
    assert updated["changes"] == [{"field": "account_type",
                                   "old_value": "TRIAL",
                                   "new_value": "BUY_NOW"}]
    assert (updated["account_type"], updated["billable"]) == ("BUY_NOW", True)
    assert converted["event_id"] == harness.event_id("TrialConverted", b)
    assert converted["billing_starts_at"] == updated["occurred_at"]
    assert converted["trial_ended_at"] == updated["occurred_at"]
    assert converted["trial_started_at"] == on_b[0][1]["occurred_at"]
    assert query(stack, "SELECT count(*) FROM timers WHERE customer_id = %s",
                 b) == [(0,)]

    # Past every trial end: the grown trial converts with 40 licenses, the
    # bought one never again.
    later = harness.Worker(stack["kafka"].bootstrap, stack["url"],
                           env=dict(FAST, MESH_WORKER_CLOCK_OFFSET_MS=str(
                               15 * DAY_MS)), name="later").start()
    try:
        # b: created, updated, converted; g: created, updated, ending,
        # converted.
        events = events_of(stack, [bought["request_id"],
                                   grown["request_id"]], 7)
        conversions = [(m["key"], d) for n, d, m in events
                       if n == "TrialConverted"]
        assert [k for k, _ in conversions].count(b.encode()) == 1
        grown_conversion, = [d for k, d in conversions if k == g.encode()]
        assert grown_conversion["licenses"] == 40
        time.sleep(2)
        events = events_of(stack, [bought["request_id"]], 3)
        assert sum(1 for n, _, _ in events if n == "TrialConverted") == 1
        assert later.stop() == 0
    finally:
        later.destroy()

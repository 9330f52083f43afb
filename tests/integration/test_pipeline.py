"""The core pipeline, end to end: a real PostgreSQL, librdkafka's mock
cluster, and mesh-worker run as its own process.  Requests are encoded and
events decoded with python3-avro against schemas/, independently of the
worker's codec."""

import hashlib
import io
import time
import uuid

import avro.io

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def encoded(avro_codec, datum, name="CustomerRequested"):
    return avro_codec.encode(name, datum)


def events_by_request(avro_codec, messages):
    out = {}
    for m in messages:
        name, datum = avro_codec.decode(m["value"])
        out.setdefault(datum["request_id"], []).append((name, datum, m))
    return out


def wait_joined(worker, timeout=60):
    harness.wait_for(lambda: "partitions assigned" in worker.log_text(),
                     timeout, "the worker to join its group")


def mixed_requests(count):
    """count requests: valid ones of every service and account type, and
    invalid ones of several kinds, with the outcome each must get."""
    out = []
    for i in range(count):
        kind = i % 10
        r = request(msp_id="msp-%d" % (i % 7))
        expect = ("CustomerCreated", None)
        if kind == 1:
            r.update(service="MESH_365", delivery_destination=None,
                     monitor_mode=True, account_type="TRIAL")
        elif kind == 2:
            r.update(service="MESH_UNIFIED", account_type="TRIAL",
                     additional_domains=["a.%s" % r["primary_domain"],
                                         "B.%s." % r["primary_domain"]])
        elif kind == 3:
            r.update(account_type="NFR", msp_domain=r["primary_domain"],
                     licenses=50, additional_domains=[
                         "sub." + r["primary_domain"]])
        elif kind == 4:
            r.update(licenses=0)
            expect = ("CustomerRejected", ["INVALID_FIELD"])
        elif kind == 5:
            r.update(service="MESH_365", mail_platform="GOOGLE_WORKSPACE")
            expect = ("CustomerRejected",
                      ["SERVICE_NOT_SUPPORTED_ON_PLATFORM"])
        elif kind == 6:
            r.update(delivery_destination="mail..example.com",
                     default_admin_email="")
            expect = ("CustomerRejected",
                      ["INVALID_FIELD", "REQUIRED_FIELD_MISSING"])
        out.append((r, expect))
    return out


def test_thousand_mixed_requests_each_get_exactly_one_outcome(
        db, kafka, workers, avro_codec):
    reqs = mixed_requests(1000)
    harness.produce_all(kafka.bootstrap, [
        (r["msp_id"].encode(), encoded(avro_codec, r),
         [("traceparent", TRACEPARENT)]) for r, _ in reqs])
    started = time.monotonic()
    w = workers(kafka.bootstrap, db.url)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 1000, timeout=180)
    elapsed = time.monotonic() - started
    print("1000 requests to 1000 outcomes in %.2f s (%.0f requests/s, "
          "including the 3 s group join)" % (elapsed, 1000 / elapsed))
    by_request = events_by_request(avro_codec, events)
    assert len(by_request) == 1000, "requests with events: %d" % len(
        by_request)
    for r, (want_type, want_codes) in reqs:
        got = by_request[r["request_id"]]
        assert len(got) == 1, (r["request_id"], [g[0] for g in got])
        name, datum, msg = got[0]
        assert name == want_type, (r, datum)
        headers = msg["headers"]
        assert headers["event_type"] == name.encode()
        assert headers["request_id"] == r["request_id"].encode()
        assert headers["traceparent"] == TRACEPARENT
        assert headers["event_id"] == datum["event_id"].encode()
        assert datum["event_id"] == harness.event_id(name, r["request_id"])
        if name == "CustomerCreated":
            cid = harness.customer_id(r["request_id"])
            assert msg["key"] == cid.encode()
            assert datum["customer_id"] == cid
            assert datum["company_name"] == r["company_name"]
            assert datum["primary_domain"] == r["primary_domain"]
            assert datum["additional_domains"] == [
                d.lower().rstrip(".") for d in r["additional_domains"]]
            assert datum["licenses"] == r["licenses"]
            assert datum["service"] == r["service"]
            assert datum["account_type"] == r["account_type"]
            assert datum["billable"] == (r["account_type"] == "BUY_NOW")
            assert datum["installation"] == {
                "MESH_GATEWAY": "MX_RECORDS",
                "MESH_365": "M365_API_CONSENT",
                "MESH_UNIFIED": "MX_RECORDS_AND_M365_API_CONSENT",
            }[r["service"]]
            if r["account_type"] == "BUY_NOW":
                assert datum["billing_starts_at"] == datum["occurred_at"]
                assert datum["trial_ends_at"] is None
            elif r["account_type"] == "TRIAL":
                assert datum["trial_ends_at"] == datum["occurred_at"] + \
                    14 * 86400 * 1000
                assert datum["billing_starts_at"] == datum["trial_ends_at"]
            else:
                assert datum["billing_starts_at"] is None
        else:
            assert msg["key"] == r["request_id"].encode()
            assert [e["code"] for e in datum["errors"]] == want_codes, datum
    valid = sum(1 for _, e in reqs if e[0] == "CustomerCreated")
    assert db.query("SELECT count(*) FROM customers")[0][0] == valid
    assert db.query("SELECT count(*) FROM requests")[0][0] == 1000
    assert db.query("SELECT count(*) FROM requests WHERE outcome = "
                    "'CREATED'")[0][0] == valid
    assert db.query("SELECT count(*) FROM outbox WHERE published_at IS "
                    "NULL")[0][0] == 0 or harness.wait_for(
        lambda: db.query("SELECT count(*) FROM outbox WHERE published_at "
                         "IS NULL")[0][0] == 0, 30, "the outbox to drain")
    assert w.stop() == 0


def test_request_delivered_five_times_to_two_replicas_yields_one_outcome(
        db, kafka, workers, avro_codec):
    w1 = workers(kafka.bootstrap, db.url)
    w2 = workers(kafka.bootstrap, db.url)
    wait_joined(w1)
    wait_joined(w2)
    # Both replicas must hold partitions before the copies arrive.
    harness.wait_for(lambda: "partitions revoked" in w1.log_text() or
                     w1.log_text().count("partitions assigned") >= 2 or
                     w2.log_text().count("partitions assigned") >= 1,
                     60, "the group to settle")
    r = request()
    value = encoded(avro_codec, r)
    # Five copies on five partitions: the two replicas see them at once.
    copies = [(b"msp-1", value, [], p) for p in range(5)]
    filler = [(b"msp-2", encoded(avro_codec, request(msp_id="msp-2")), [])
              for _ in range(50)]
    harness.produce_all(kafka.bootstrap, copies + filler)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 51, timeout=120)
    time.sleep(2)  # anything doubled would arrive by now
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 51, timeout=60)
    mine = events_by_request(avro_codec, events)[r["request_id"]]
    assert len(mine) == 1, [m[0] for m in mine]
    assert mine[0][0] == "CustomerCreated"
    assert mine[0][1]["event_id"] == harness.event_id("CustomerCreated",
                                                      r["request_id"])
    assert db.query("SELECT count(*) FROM customers WHERE request_id = %s",
                    r["request_id"])[0][0] == 1
    assert len(events) == 51


def test_two_msps_racing_for_one_domain_get_one_customer(
        db, kafka, workers, avro_codec):
    w1 = workers(kafka.bootstrap, db.url)
    w2 = workers(kafka.bootstrap, db.url)
    wait_joined(w1)
    wait_joined(w2)
    racers = []
    for round_ in range(20):
        domain = "contested-%d-%s.example.org" % (round_, uuid.uuid4().hex[:6])
        a = request(msp_id="msp-a", primary_domain=domain)
        b = request(msp_id="msp-b", primary_domain=domain.upper())
        racers.append((domain, a, b))
    harness.produce_all(kafka.bootstrap, [
        m for _, a, b in racers for m in (
            (b"msp-a", encoded(avro_codec, a), [], 0),
            (b"msp-b", encoded(avro_codec, b), [], 1))])
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 40, timeout=120)
    by_request = events_by_request(avro_codec, events)
    for domain, a, b in racers:
        outcomes = sorted([by_request[a["request_id"]][0][0],
                           by_request[b["request_id"]][0][0]])
        assert outcomes == ["CustomerCreated", "CustomerRejected"], outcomes
        loser = [by_request[x["request_id"]][0][1] for x in (a, b)
                 if by_request[x["request_id"]][0][0] == "CustomerRejected"][0]
        assert [(e["field"], e["code"]) for e in loser["errors"]] == [
            ("primary_domain", "DOMAIN_ALREADY_PROVISIONED")]
        assert domain in loser["errors"][0]["message"]
        assert db.query("SELECT count(*) FROM customer_domains WHERE domain "
                        "= %s AND released_at IS NULL", domain)[0][0] == 1


def identity_hash(avro_codec, datum):
    """SHA-256 of the request's Avro binary with requested_at = 0."""
    schema = avro_codec.schemas["CustomerRequested"][0]
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(
        harness._to_avro(schema, dict(datum, requested_at=0)),
        avro.io.BinaryEncoder(buf))
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_same_request_id_with_other_content_is_a_conflict_and_changes_nothing(
        db, kafka, workers, avro_codec):
    workers(kafka.bootstrap, db.url)
    original = request(company_name="Original Ltd")
    changed = dict(original, company_name="Changed Ltd")
    resent = dict(original, requested_at=original["requested_at"] + 5000)
    key = original["msp_id"].encode()
    harness.produce_all(kafka.bootstrap, [
        (key, encoded(avro_codec, original), [], 0)])
    harness.read_topic(kafka.bootstrap, TOPIC_EVENTS, lambda ms: len(ms) >= 1)
    harness.produce_all(kafka.bootstrap, [
        (key, encoded(avro_codec, changed), [], 0),
        (key, encoded(avro_codec, resent), [], 0),   # same content: nothing
        (key, encoded(avro_codec, changed), [], 0),  # same conflict again
        (key, encoded(avro_codec, request()), [], 0)])
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 3)
    time.sleep(2)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 3)
    mine = events_by_request(avro_codec, events)[original["request_id"]]
    # Different keys (customer id, request id): no order between them.
    assert sorted(m[0] for m in mine) == ["CustomerCreated",
                                          "CustomerRejected"]
    rejected = [m[1] for m in mine if m[0] == "CustomerRejected"][0]
    assert [(e["field"], e["code"]) for e in rejected["errors"]] == [
        ("request_id", "REQUEST_ID_CONFLICT")]
    source = "%s:conflict:%s" % (original["request_id"],
                                 identity_hash(avro_codec, changed))
    assert rejected["event_id"] == harness.event_id("CustomerRejected",
                                                    source)
    rows = db.query("SELECT company_name FROM customers WHERE request_id = %s",
                    original["request_id"])
    assert rows == [("Original Ltd",)]
    assert len(events) == 3


def test_undecodable_bytes_go_to_the_dlq_untouched_and_the_partition_moves_on(
        db, kafka, workers, avro_codec):
    valid = request()
    good = encoded(avro_codec, valid)
    poison = [
        (b"k-confluent", b"\x00\x00\x00\x00\x07garbage", "unknown-schema"),
        (b"k-magic", b"hello world", "bad-magic"),
        (b"k-truncated", good[:len(good) // 2], "corrupt-avro"),
        (b"k-trailing", good + b"\x00", "corrupt-avro"),
        (None, None, "empty-value"),
        (b"k-wrong", encoded(avro_codec, {
            "event_id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4()),
            "msp_id": "m", "occurred_at": 1, "trial_ends_at": 2,
            "licenses": 3, "requested_by": "a@b.example"}, "TrialEnding"),
         "wrong-record-type"),
    ]
    headers = [("x-custom", b"\xff\x00binary"), ("traceparent", TRACEPARENT)]
    offsets = {}
    p = harness.producer(kafka.bootstrap)
    for i, (key, value, reason) in enumerate(poison):
        stamp = 1764000000000 + i

        def report(err, msg, key=key, stamp=stamp):
            offsets[key] = (msg.partition(), msg.offset(), stamp)
        p.produce("customer.requests", key=key, value=value, headers=headers,
                  partition=3, timestamp=stamp, on_delivery=report)
    p.produce("customer.requests", key=b"msp-1", value=good, partition=3)
    assert p.flush(30) == 0
    workers(kafka.bootstrap, db.url, MESH_WORKER_GROUP_ID="dlq-test")
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 1)
    assert avro_codec.decode(events[0]["value"])[1]["request_id"] == \
        valid["request_id"]
    dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ,
                             lambda ms: len(ms) >= len(poison))
    assert len(dlq) == len(poison)
    for (key, value, reason), m in zip(poison, dlq):
        assert m["key"] == key
        assert m["value"] == value
        h = m["headers"]
        assert h["x-custom"] == b"\xff\x00binary"
        assert h["traceparent"] == TRACEPARENT
        assert h["dlq.reason"] == reason.encode(), (h, reason)
        assert h["dlq.error"]
        partition, offset, timestamp = offsets[key]
        assert h["dlq.original.topic"] == b"customer.requests"
        assert h["dlq.original.partition"] == str(partition).encode()
        assert h["dlq.original.offset"] == str(offset).encode()
        assert h["dlq.original.timestamp"] == str(timestamp).encode()
        assert h["dlq.consumer.group"] == b"dlq-test"


def test_events_of_one_key_are_published_in_commit_order(
        db, kafka, workers, avro_codec):
    # Published rows are kept, so that the commit order can be read back.
    workers(kafka.bootstrap, db.url, MESH_WORKER_OUTBOX_RETENTION="1h")
    first = request(licenses=0)  # rejected
    variants = [dict(first, company_name="Variant %d" % i) for i in range(5)]
    for v in [first] + variants:
        harness.produce_all(kafka.bootstrap, [
            (b"msp-1", encoded(avro_codec, v), [], 0)])
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 6)
    keyed = [m for m in events if m["key"] == first["request_id"].encode()]
    assert len(keyed) == 6
    keyed.sort(key=lambda m: m["offset"])
    assert len({m["partition"] for m in keyed}) == 1
    published = [m["headers"]["event_id"].decode() for m in keyed]
    committed = [str(r[0]) for r in db.query(
        "SELECT event_id FROM outbox WHERE key = %s ORDER BY id",
        first["request_id"].encode())]
    assert published == committed
    kinds = [avro_codec.decode(m["value"])[1]["errors"][0]["code"]
             for m in keyed]
    assert kinds == ["INVALID_FIELD"] + ["REQUEST_ID_CONFLICT"] * 5


def test_termination_of_an_unknown_customer_is_rejected_not_blocking(
        db, kafka, workers, avro_codec):
    workers(kafka.bootstrap, db.url)
    t = {"request_id": str(uuid.uuid4()), "requested_at": 1764000000000,
         "requested_by": "user@msp.example", "msp_id": "msp-1",
         "customer_id": str(uuid.uuid4()), "effective_at": None}
    after = request()
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", encoded(avro_codec, t, "CustomerTerminationRequested"), [],
         0),
        (b"msp-1", encoded(avro_codec, after), [], 0)])
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 2)
    by_request = events_by_request(avro_codec, events)
    name, datum, _ = by_request[t["request_id"]][0]
    assert name == "CustomerRejected"
    assert [(e["field"], e["code"]) for e in datum["errors"]] == [
        ("customer_id", "UNKNOWN_CUSTOMER")]
    assert by_request[after["request_id"]][0][0] == "CustomerCreated"

"""The crash test's load with trials mixed in, and its checks in the form
the PostgreSQL failover test reads them: every request one outcome, no
domain twice live, every outcome on customer.events with stable bytes,
per-key order, the undecodable messages in the DLQ as consumed."""

import collections
import random

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

TOTAL = 50000

def build_requests(avro_codec, total=TOTAL, trials=0):
    """total messages (a multiple of 1,000): (key, value, kind, request
    datum or None); 80 % valid (the first trials of them TRIAL), 10 %
    invalid, 7.9 % exact redeliveries, 2 % conflicts, 0.1 % undecodable."""
    rnd = random.Random(20261125)
    unit = total // 1000
    valid = [request(msp_id="msp-%d" % (i % 40)) for i in range(800 * unit)]
    for r in valid[:trials]:
        r["account_type"] = "TRIAL"
    invalid = [request(msp_id="msp-%d" % (i % 40), licenses=0)
               for i in range(100 * unit)]
    messages = [(r["msp_id"].encode(),
                 avro_codec.encode("CustomerRequested", r), "valid", r)
                for r in valid]
    messages += [(r["msp_id"].encode(),
                  avro_codec.encode("CustomerRequested", r), "invalid", r)
                 for r in invalid]
    for r in rnd.sample(valid, 79 * unit):      # exact redeliveries
        messages.append((r["msp_id"].encode(),
                         avro_codec.encode("CustomerRequested", r),
                         "duplicate", r))
    for r in rnd.sample(invalid, 20 * unit):    # same id, other content
        changed = dict(r, company_name=r["company_name"] + " (changed)")
        messages.append((r["msp_id"].encode(),
                         avro_codec.encode("CustomerRequested", changed),
                         "conflict", changed))
    garbage = [(b"bad-%d" % i, b"\xc3\x01garbage-%d" % i, "garbage", None)
               for i in range(unit)]
    messages += garbage
    assert len(messages) == total
    rnd.shuffle(messages)
    # A conflict must come after the request it conflicts with.
    first = {}
    for i, (_, _, kind, r) in enumerate(messages):
        if r is not None and kind != "conflict":
            first.setdefault(r["request_id"], i)
    for i, (_, _, kind, r) in enumerate(messages):
        if kind == "conflict" and first[r["request_id"]] > i:
            j = first[r["request_id"]]
            messages[i], messages[j] = messages[j], messages[i]
            first[r["request_id"]] = i
    return messages, valid, invalid, garbage


def check_every_guarantee(pg, bootstrap, valid, invalid, garbage):
    """Once every request has its outcome and the outbox is published:
    one outcome per request id, of the right kind; no domain with two
    live customers; every committed event on customer.events, identical
    when repeated, first publications of a key in commit order; the
    undecodable messages in the DLQ as consumed.  Returns counts."""
    # One outcome per request id, of the right kind.
    created = pg.query("SELECT count(*) FROM requests WHERE outcome = "
                       "'CREATED'")[0][0]
    rejected = pg.query("SELECT count(*) FROM requests WHERE outcome = "
                        "'REJECTED'")[0][0]
    assert created == len(valid) == pg.query(
        "SELECT count(*) FROM customers")[0][0]
    assert rejected == len(invalid)
    conflicts = pg.query("SELECT sum(conflicts) FROM requests")[0][0]
    assert conflicts >= len(invalid) // 5
    assert pg.query("SELECT count(*) FROM (SELECT domain FROM "
                    "customer_domains WHERE released_at IS NULL GROUP BY "
                    "domain HAVING count(*) > 1) d")[0][0] == 0

    # Every committed event is on the topic, identical when repeated.
    want = {str(r[0]): r[1] for r in pg.query(
        "SELECT event_id, id FROM outbox WHERE stream = 0")}
    assert len(want) >= created + rejected
    events = harness.read_topic(
        bootstrap, TOPIC_EVENTS,
        lambda ms: len({m["headers"]["event_id"] for m in ms}) >=
        len(want), timeout=300)
    payloads = collections.defaultdict(set)
    per_key = collections.defaultdict(list)
    for m in events:
        payloads[m["headers"]["event_id"].decode()].add(m["value"])
        per_key[(m["partition"], m["key"])].append(
            (m["offset"], m["headers"]["event_id"].decode()))
    assert set(payloads) == set(want)
    assert all(len(v) == 1 for v in payloads.values())
    republished = len(events) - len(payloads)
    # Per key, first publications follow the outbox (commit) order.
    out_of_order = 0
    for key, items in per_key.items():
        order, seen = [], set()
        for _, event_id in sorted(items):
            if event_id not in seen:
                seen.add(event_id)
                order.append(want[event_id])
        out_of_order += order != sorted(order)
    assert out_of_order == 0

    # Undecodable bytes are in the DLQ exactly as consumed.
    dlq = harness.read_topic(bootstrap, TOPIC_DLQ,
                             lambda ms: len({m["value"] for m in ms}) >=
                             len(garbage), timeout=120)
    expected = {value: key for key, value, _, _ in garbage}
    assert {m["value"] for m in dlq} == set(expected)
    for m in dlq:
        assert m["key"] == expected[m["value"]]
        assert m["headers"]["dlq.reason"] == b"unknown-schema"

    return {"created": created, "rejected": rejected, "conflicts": conflicts,
            "events": len(events), "republished": republished,
            "dlq": len(dlq)}



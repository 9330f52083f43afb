"""The crash tests' load and the checks of every delivery guarantee after
it, shared by the tests that break something under load (a worker, a
broker, the database).

build_requests() makes the mix: valid requests, invalid ones, exact
redeliveries, the same request id with other content, a few messages
that do not decode and, when asked, updates of the valid customers (two
each, after the creation).  check_guarantees() then asserts, once
everything is processed, that each request id has exactly one outcome, no
domain has two live customers, every committed event is on the events
topic with repetitions identical in event_id and bytes, first
publications per key follow commit order, each updated customer holds
its last update and its events come in request order, and the
undecodable messages are in the DLQ exactly as consumed.
"""

import collections
import random

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

# The mix per 50,000 messages (the crash test's size).
MIX = {"valid": 40000, "invalid": 5000, "duplicate": 3950,
       "conflict": 1000, "garbage": 50}


class Load:
    """The messages (key, value, kind, request datum or None) in produce
    order, and the requests behind them."""

    def __init__(self, messages, valid, invalid, garbage, duplicates,
                 updates=()):
        self.messages = messages
        self.valid = valid
        self.invalid = invalid
        self.garbage = garbage
        self.duplicates = duplicates
        self.updates = list(updates)  # per customer in order


def build_requests(avro_codec, total=50000, msps=40, seed=20261125,
                   trials=0, updates=0):
    """total messages in MIX's proportions, keyed by MSP id (msps of them);
    the first trials valid requests ask for a TRIAL account.  With
    updates, that many CustomerUpdateRequested more: two for each of
    updates / 2 valid customers, each after its creation (same key)."""
    count = {kind: n * total // 50000 for kind, n in MIX.items()}
    count["valid"] += total - sum(count.values())
    rnd = random.Random(seed)
    valid = [request(msp_id="msp-%d" % (i % msps))
             for i in range(count["valid"])]
    for r in valid[:trials]:
        r["account_type"] = "TRIAL"
    invalid = [request(msp_id="msp-%d" % (i % msps), licenses=0)
               for i in range(count["invalid"])]
    messages = [(r["msp_id"].encode(),
                 avro_codec.encode("CustomerRequested", r), "valid", r)
                for r in valid]
    messages += [(r["msp_id"].encode(),
                  avro_codec.encode("CustomerRequested", r), "invalid", r)
                 for r in invalid]
    for r in rnd.sample(valid, count["duplicate"]):  # exact redeliveries
        messages.append((r["msp_id"].encode(),
                         avro_codec.encode("CustomerRequested", r),
                         "duplicate", r))
    for r in rnd.sample(invalid, count["conflict"]):  # same id, other content
        changed = dict(r, company_name=r["company_name"] + " (changed)")
        messages.append((r["msp_id"].encode(),
                         avro_codec.encode("CustomerRequested", changed),
                         "conflict", changed))
    garbage = [(b"bad-%d" % i, b"\xc3\x01garbage-%d" % i, "garbage", None)
               for i in range(count["garbage"])]
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
    changes = add_updates(avro_codec, messages, valid, updates, rnd)
    return Load(messages, valid, invalid, garbage, count["duplicate"],
                changes)


def add_updates(avro_codec, messages, valid, count, rnd):
    """Mixes count updates into messages (two for each customer chosen),
    then puts each customer's creation and updates in that order at the
    places they took.  Returns the updates, a customer's in order."""
    updates = []
    for k, r in enumerate(rnd.sample(valid, count // 2)):
        customer = harness.customer_id(r["request_id"])
        for step in range(2):
            updates.append(harness.update_request(
                customer, msp_id=r["msp_id"], licenses=100 + 2 * k + step,
                observed_at=1764000000000 + step))
    for u in updates:
        messages.insert(rnd.randrange(len(messages) + 1),
                        (u["msp_id"].encode(),
                         avro_codec.encode("CustomerUpdateRequested", u),
                         "update", u))
    places = collections.defaultdict(list)
    ordered = {}
    for u in updates:
        ordered.setdefault(u["customer_id"], []).append(u["request_id"])
    for i, (_, _, kind, r) in enumerate(messages):
        if kind == "valid" and harness.customer_id(r["request_id"]) in ordered:
            places[harness.customer_id(r["request_id"])].insert(0, i)
        elif kind == "update":
            places[r["customer_id"]].append(i)
    for customer, at in places.items():
        at.sort()
        group = sorted((messages[i] for i in at),
                       key=lambda m: (m[2] == "update",
                                      ordered[customer].index(
                                          m[3]["request_id"])
                                      if m[2] == "update" else -1))
        for i, m in zip(at, group):
            messages[i] = m
    return updates


def wait_processed(pg, load, timeout=600):
    """Waits until every request id has an outcome and the outbox is
    published (the workers keep published rows: OUTBOX_RETENTION)."""
    distinct = {r["request_id"]
                for r in load.valid + load.invalid + load.updates}
    harness.wait_for(
        lambda: pg.count("SELECT count(*) FROM requests") ==
        len(distinct) and pg.query(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
        == 0, timeout, "every request to have an outcome", interval=1)


def check_guarantees(pg, bootstrap, load, conf=None):
    """Asserts every guarantee (see the module's comment); returns the
    counts and the events read: created, rejected, conflicts, events,
    republished, dlq, and "topic" (the events as read_topic gives them)."""
    created = pg.query("SELECT count(*) FROM requests WHERE outcome = "
                       "'CREATED'")[0][0]
    rejected = pg.query("SELECT count(*) FROM requests WHERE outcome = "
                        "'REJECTED'")[0][0]
    assert created == len(load.valid) == pg.query(
        "SELECT count(*) FROM customers")[0][0]
    assert rejected == len(load.invalid)
    conflicts = pg.query("SELECT sum(conflicts) FROM requests")[0][0]
    conflicting = sum(1 for m in load.messages if m[2] == "conflict")
    assert conflicts >= conflicting
    assert pg.query("SELECT count(*) FROM (SELECT domain FROM "
                    "customer_domains WHERE released_at IS NULL GROUP BY "
                    "domain HAVING count(*) > 1) d")[0][0] == 0

    # Every committed event is on the topic, identical when repeated.
    want = {str(r[0]): r[1] for r in pg.query(
        "SELECT event_id, id FROM outbox WHERE stream = 0")}
    assert len(want) >= created + rejected
    events = harness.read_topic(
        bootstrap, TOPIC_EVENTS,
        lambda ms: len({m["headers"]["event_id"] for m in ms}) >= len(want),
        timeout=300, conf=conf)
    payloads = collections.defaultdict(set)
    per_key = collections.defaultdict(list)
    for m in events:
        payloads[m["headers"]["event_id"].decode()].add(m["value"])
        per_key[(m["partition"], m["key"])].append(
            (m["offset"], m["headers"]["event_id"].decode()))
    assert set(payloads) == set(want)
    assert all(len(v) == 1 for v in payloads.values())
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

    check_updates(pg, load, events, want)

    # Undecodable bytes are in the DLQ exactly as consumed.
    dlq = harness.read_topic(bootstrap, TOPIC_DLQ,
                             lambda ms: len({m["value"] for m in ms}) >=
                             len(load.garbage), timeout=120, conf=conf)
    expected = {value: key for key, value, _, _ in load.garbage}
    assert {m["value"] for m in dlq} == set(expected)
    for m in dlq:
        assert m["key"] == expected[m["value"]]
        assert m["headers"]["dlq.reason"] == b"unknown-schema"
    return {"created": created, "rejected": rejected, "conflicts": conflicts,
            "events": len(events), "republished": len(events) - len(payloads),
            "dlq": len(dlq), "topic": events}


def check_updates(pg, load, events, outbox_ids):
    """Each update has exactly one outcome, UPDATED; each updated customer
    holds its last update's licenses, and on its key the first
    publications are its creation and then its updates, in order."""
    if not load.updates:
        return
    assert pg.query("SELECT count(*) FROM requests WHERE outcome = "
                    "'UPDATED'")[0][0] == len(load.updates)
    assert pg.query("SELECT count(*) FROM customer_changes")[0][0] == \
        len(load.updates)
    last, expected = {}, collections.defaultdict(list)
    for u in load.updates:
        last[u["customer_id"]] = u["licenses"]
        expected[u["customer_id"]].append(
            harness.event_id("CustomerUpdated", u["request_id"]))
    rows = pg.query("SELECT customer_id::text, licenses FROM customers "
                    "WHERE customer_id = ANY(%s::uuid[])", list(last))
    assert dict(rows) == last
    created = {harness.customer_id(r["request_id"]): harness.event_id(
        "CustomerCreated", r["request_id"]) for r in load.valid}
    firsts = collections.defaultdict(list)
    for m in sorted(events, key=lambda m: (m["partition"], m["offset"])):
        key = m["key"].decode() if m["key"] else None
        event_id = m["headers"]["event_id"].decode()
        if key in expected and event_id not in firsts[key]:
            firsts[key].append(event_id)
    wrong = [c for c in expected
             if firsts[c] != [created[c]] + expected[c]]
    assert not wrong, (len(wrong), wrong[:3])
    assert all(e in outbox_ids for ids in expected.values() for e in ids)

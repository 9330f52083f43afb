"""The crash test, on a real Apache Kafka broker: two replicas, 50,000
requests (valid, invalid, duplicated, conflicting and a few undecodable),
and a random replica SIGKILLed and restarted 20 times while they work.

Afterwards every request id has exactly one outcome in PostgreSQL, no
domain has two live customers, every outcome is on customer.events at
least once with re-publications identical in event_id and bytes, the
events of each key are in commit order, and the undecodable messages are
in the DLQ exactly as consumed."""

import collections
import random
import time


import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request


TOTAL = 50000
KILLS = 20


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


def test_two_replicas_killed_twenty_times_keep_every_guarantee(
        real_kafka, avro_codec, tmp_path):
    pg = harness.Postgres().start()
    started = []
    try:
        messages, valid, invalid, garbage = build_requests(avro_codec)
        # Published rows are kept, so that every committed event and its
        # commit order can be read back.
        env = {"MESH_WORKER_KAFKA_SESSION_TIMEOUT_MS": "6000",
               "MESH_WORKER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
               "MESH_WORKER_OUTBOX_RETENTION": "1h"}

        def spawn(i):
            w = harness.Worker(real_kafka.bootstrap, pg.url, env=env,
                               name="r%d-%d" % (i, len(started))).start()
            started.append(w)
            return w

        replicas = [spawn(0), spawn(1)]
        rnd = random.Random(7)
        chunk = len(messages) // KILLS
        t0 = time.monotonic()
        for k in range(KILLS):
            harness.produce_all(real_kafka.bootstrap, [
                (key, value, [("traceparent", b"00-%032x-%016x-01" % (
                    k + 1, k + 1))])
                for key, value, _, _ in messages[k * chunk:(k + 1) * chunk]])
            time.sleep(rnd.uniform(0.5, 2.5))
            victim = rnd.randrange(2)
            replicas[victim].kill()
            replicas[victim] = spawn(victim)
        harness.produce_all(real_kafka.bootstrap, [
            (key, value, []) for key, value, _, _ in messages[KILLS * chunk:]])

        distinct = {r["request_id"] for r in valid + invalid}
        harness.wait_for(
            lambda: pg.query("SELECT count(*) FROM requests")[0][0] ==
            len(distinct) and pg.query(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
            == 0, 600, "every request to have an outcome", interval=1)
        elapsed = time.monotonic() - t0

        stats = check_every_guarantee(pg, real_kafka.bootstrap, valid,
                                      invalid, garbage)
        print("\ncrash test: %d messages, %d kills, %.0f s: %d created, %d "
              "rejected, %d conflicts, %d duplicates absorbed, %d events "
              "(%d re-published), %d DLQ messages (%d distinct)" % (
                  TOTAL, KILLS, elapsed, stats["created"], stats["rejected"],
                  stats["conflicts"], 3950, stats["events"],
                  stats["republished"], stats["dlq"], len(garbage)))
        for w in replicas:
            assert w.stop() == 0
    finally:
        for w in started:
            w.destroy()
        pg.destroy()

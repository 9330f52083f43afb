"""Exactly-once publishing, on a real Apache Kafka broker: two replicas
with MESH_WORKER_DELIVERY=exactly-once, the crash test's kind of load, the
replica leading the relay SIGKILLed 20 times mid-round (the test-only
MESH_WORKER_TEST_PAUSE_AFTER_COMMIT_MS widens the window between a
transaction's commit and the marking of its rows, so that kills land
there too) and the broker restarted once while rounds are open.

Afterwards a read_committed consumer sees every outcome and dead letter
exactly once, byte-identical, in per-key commit order; a read_uncommitted
consumer sees them all too, plus the copies of aborted transactions,
which the test counts."""

import collections
import random
import time

from confluent_kafka import Consumer, TopicPartition

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS
from guarantees import build_requests


MESSAGES = 12000
KILLS = 20
LEADS = "this replica now publishes the outbox"
RECOVERED = "marking rows a committed transaction published"


def read_all(bootstrap, topic, isolation, until, settle=3.0, timeout=120):
    """Every message of topic with the given isolation.level: reads until
    until(messages) holds and then settle seconds more."""
    c = Consumer({"bootstrap.servers": bootstrap,
                  "group.id": "mw-test-eos-%s-%f" % (isolation, time.time()),
                  "enable.auto.commit": False,
                  "isolation.level": isolation})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, -2) for p in md.topics[topic].partitions])
    out, deadline, quiet_until = [], time.monotonic() + timeout, None
    try:
        while quiet_until is None or time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, (
                "timed out reading %s (%s): %d messages"
                % (topic, isolation, len(out)))
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    continue
                out.append({"partition": m.partition(), "offset": m.offset(),
                            "key": m.key(), "value": m.value(),
                            "headers": dict(m.headers() or [])})
            if quiet_until is None and until(out):
                quiet_until = time.monotonic() + settle
    finally:
        c.close()
    return out


def leads(worker, since):
    """Whether worker's log says it took the relay's lead after since."""
    for line in worker.log_text().splitlines()[since:]:
        if LEADS in line:
            return True
    return False


def test_leader_killed_twenty_times_read_committed_sees_each_event_once(
        real_kafka, avro_codec):
    pg = harness.Postgres().start()
    started = []
    try:
        messages = build_requests(avro_codec).messages[:MESSAGES]
        garbage = [m for m in messages if m[2] == "garbage"]
        env = {"MESH_WORKER_DELIVERY": "exactly-once",
               "MESH_WORKER_OUTBOX_RETENTION": "1h",
               "MESH_WORKER_RELAY_BATCH_SIZE": "200",
               "MESH_WORKER_TEST_PAUSE_AFTER_COMMIT_MS": "150"}

        def spawn(i):
            w = harness.Worker(real_kafka.bootstrap, pg.url, env=env,
                               name="r%d-%d" % (i, len(started))).start()
            started.append(w)
            return w

        replicas = [spawn(0), spawn(1)]
        marks = [0, 0]  # log lines already read, per replica slot
        rnd = random.Random(18)
        chunk = len(messages) // KILLS
        restarted = False
        t0 = time.monotonic()
        for k in range(KILLS):
            harness.produce_all(real_kafka.bootstrap, [
                (key, value, []) for key, value, _, _ in
                messages[k * chunk:(k + 1) * chunk]])
            leader = harness.wait_for(
                lambda: next((i + 1 for i in (0, 1)
                              if leads(replicas[i], marks[i])), None),
                60, "a replica to lead the relay") - 1
            if k == KILLS // 2 and not restarted:
                # Rounds are open while the broker goes down and comes back.
                time.sleep(rnd.uniform(0.1, 0.6))
                real_kafka.restart()
                restarted = True
            time.sleep(rnd.uniform(0.2, 1.5))
            replicas[leader].kill()
            replicas[leader] = spawn(leader)
            marks[leader] = 0
            other = 1 - leader
            marks[other] = len(replicas[other].log_text().splitlines())
        harness.produce_all(real_kafka.bootstrap, [
            (key, value, []) for key, value, _, _ in
            messages[KILLS * chunk:]])

        distinct = {r["request_id"] for _, _, kind, r in messages
                    if r is not None}
        harness.wait_for(
            lambda: pg.query("SELECT count(*) FROM requests")[0][0] ==
            len(distinct) and pg.query(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
            == 0, 300, "every request to be handled and published",
            interval=1)
        elapsed = time.monotonic() - t0

        want = {str(e): i for e, i in pg.query(
            "SELECT event_id, id FROM outbox WHERE stream = 0")}
        stored = {str(e): bytes(p) for e, p in pg.query(
            "SELECT event_id, payload FROM outbox WHERE stream = 0")}
        assert len(want) >= len(distinct)

        def distinct_ids(ms):
            return len({m["headers"]["event_id"] for m in ms}) >= len(want)

        committed = read_all(real_kafka.bootstrap, TOPIC_EVENTS,
                             "read_committed", distinct_ids)
        uncommitted = read_all(real_kafka.bootstrap, TOPIC_EVENTS,
                               "read_uncommitted", distinct_ids)

        # read_committed: every event once, the bytes committed, in order.
        seen = collections.Counter(m["headers"]["event_id"].decode()
                                   for m in committed)
        duplicates = sum(n - 1 for n in seen.values())
        assert set(seen) == set(want), (len(seen), len(want))
        assert duplicates == 0, seen.most_common(3)
        for m in committed:
            assert m["value"] == stored[m["headers"]["event_id"].decode()]
        per_key = collections.defaultdict(list)
        for m in sorted(committed, key=lambda m: m["offset"]):
            per_key[(m["partition"], m["key"])].append(
                want[m["headers"]["event_id"].decode()])
        assert all(ids == sorted(ids) for ids in per_key.values())

        # read_uncommitted: the same events, plus aborted copies.
        useen = collections.Counter(m["headers"]["event_id"].decode()
                                    for m in uncommitted)
        assert set(useen) == set(want)
        aborted = len(uncommitted) - len(committed)
        assert aborted >= 0

        # Dead letters travel the same way: once each, as consumed.
        dlq = read_all(real_kafka.bootstrap, TOPIC_DLQ, "read_committed",
                       lambda ms: len(ms) >= len(garbage))
        assert sorted(m["value"] for m in dlq) == sorted(
            value for _, value, _, _ in garbage)

        recovered = sum(w.log_text().count(RECOVERED) for w in started)
        print("\nexactly-once test: %d messages, %d leader kills, broker "
              "restarted once, %.0f s: %d events; read_committed saw %d "
              "(%d duplicates), read_uncommitted saw %d (%d copies from "
              "aborted transactions); %d DLQ messages; %d take-overs "
              "marked rows a committed transaction had published" % (
                  len(messages), KILLS, elapsed, len(want), len(committed),
                  duplicates, len(uncommitted), aborted, len(dlq),
                  recovered))
        for w in replicas:
            assert w.stop() == 0
    finally:
        for w in started:
            w.destroy()
        pg.destroy()

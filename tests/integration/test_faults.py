"""Kafka faults and group changes on librdkafka's mock cluster: injected
errors on Produce, Fetch, OffsetCommit and JoinGroup, the broker going
down and coming back, and replicas joining and leaving mid-stream.  After
each: every request has exactly one outcome in PostgreSQL, every outcome
is on customer.events, nothing went to the DLQ, and the worker recovered
without a restart."""

import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

# Kafka API keys and error codes used with the mock cluster.
PRODUCE, FETCH, OFFSET_COMMIT, JOIN_GROUP = 0, 1, 8, 11
NOT_LEADER, REQUEST_TIMED_OUT = 6, 7
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR = \
    14, 15, 16


def produce_requests(kafka, avro_codec, reqs):
    harness.produce_all(kafka.bootstrap, [
        (b"msp-%d" % (i % 16), avro_codec.encode("CustomerRequested", r), [])
        for i, r in enumerate(reqs)])


def assert_exactly_once(db, kafka, avro_codec, reqs, timeout=180):
    want = {r["request_id"] for r in reqs}
    events = harness.read_topic(
        kafka.bootstrap, TOPIC_EVENTS,
        lambda ms: len({avro_codec.decode(m["value"])[1]["request_id"]
                        for m in ms}) >= len(want), timeout=timeout)
    seen = [avro_codec.decode(m["value"])[1] for m in events]
    assert {e["request_id"] for e in seen} == want
    # Re-publication is allowed only as the same event: same id, same bytes.
    by_id = {}
    for m in events:
        by_id.setdefault(m["headers"]["event_id"], set()).add(m["value"])
    assert all(len(v) == 1 for v in by_id.values())
    assert db.query("SELECT count(*) FROM requests")[0][0] == len(want)
    assert db.query("SELECT count(*) FROM customers")[0][0] == len(want)
    assert db.query("SELECT count(*) FROM (SELECT domain FROM "
                    "customer_domains WHERE released_at IS NULL GROUP BY "
                    "domain HAVING count(*) > 1) d")[0][0] == 0
    dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ, lambda ms: True,
                             timeout=5)
    assert dlq == []
    return events


@pytest.mark.parametrize("api,error,count", [
    (PRODUCE, NOT_LEADER, 20),
    (PRODUCE, REQUEST_TIMED_OUT, 10),
    (FETCH, NOT_LEADER, 20),
    (OFFSET_COMMIT, COORDINATOR_LOAD_IN_PROGRESS, 10),
    (OFFSET_COMMIT, NOT_COORDINATOR, 10),
    (JOIN_GROUP, COORDINATOR_NOT_AVAILABLE, 5),
])
def test_injected_kafka_errors_lose_and_skip_nothing(
        db, kafka, workers, avro_codec, api, error, count):
    if api == JOIN_GROUP:
        kafka.command("errors %d %d %d" % (api, count, error))
    w = workers(kafka.bootstrap, db.url)
    reqs = [request() for _ in range(1500)]
    produce_requests(kafka, avro_codec, reqs[:500])
    if api != JOIN_GROUP:
        kafka.command("errors %d %d %d" % (api, count, error))
    produce_requests(kafka, avro_codec, reqs[500:])
    assert_exactly_once(db, kafka, avro_codec, reqs)
    assert w.alive()


def test_broker_down_and_back_recovers_without_restart(
        db, kafka, workers, avro_codec):
    w = workers(kafka.bootstrap, db.url)
    reqs = [request() for _ in range(2000)]
    produce_requests(kafka, avro_codec, reqs[:1000])
    harness.wait_for(lambda: db.query(
        "SELECT count(*) FROM requests")[0][0] > 0 if _migrated(db) else
        False, 60, "processing to start")
    kafka.command("down 1")
    time.sleep(5)
    kafka.command("up 1")
    produce_requests(kafka, avro_codec, reqs[1000:])
    assert_exactly_once(db, kafka, avro_codec, reqs)
    assert w.alive()


def _topic_size(bootstrap, topic):
    """Messages in topic: the sum of its partitions' high watermarks."""
    c = Consumer({"bootstrap.servers": bootstrap,
                  "group.id": "mw-test-size"})
    try:
        md = c.list_topics(topic, timeout=10)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p),
                                           timeout=10)[1]
                   for p in md.topics[topic].partitions)
    finally:
        c.close()


def _migrated(db):
    try:
        db.query("SELECT 1 FROM requests LIMIT 1")
        return True
    except Exception:
        return False


def test_replicas_joining_and_leaving_mid_stream_lose_and_double_nothing(
        db, kafka, workers, avro_codec):
    w1 = workers(kafka.bootstrap, db.url)
    w2 = workers(kafka.bootstrap, db.url)
    reqs = [request() for _ in range(6000)]
    stop = threading.Event()

    def feed():
        for i in range(0, len(reqs), 250):
            produce_requests(kafka, avro_codec, reqs[i:i + 250])
            time.sleep(0.25)
        stop.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(2)
    w3 = workers(kafka.bootstrap, db.url)        # a third replica joins
    harness.wait_for(lambda: "partitions assigned" in w3.log_text(), 60,
                     "the third replica to get partitions")
    assert w1.stop() == 0                         # one leaves gracefully
    time.sleep(1)
    w2.kill()                                     # and one dies
    feeder.join()
    assert_exactly_once(db, kafka, avro_codec, reqs, timeout=240)
    assert w3.alive()
    assert "partitions revoked" in w1.log_text()


def test_slow_acknowledgements_publish_each_event_once_in_commit_order(
        db, kafka, workers, avro_codec):
    # Published rows are kept, so that the commit order can be read back.
    w = workers(kafka.bootstrap, db.url, MESH_WORKER_OUTBOX_RETENTION="1h")
    # Every answer now takes 200 ms: the relay produces round after round
    # while the delivery reports of the earlier rounds are still out.
    kafka.command("rtt 1 200")
    # Rejected, so that all five events of a request carry its id as key.
    firsts = [request(licenses=0) for _ in range(20)]
    for wave in range(5):
        batch = [dict(f, company_name="Variant %d" % wave) if wave else f
                 for f in firsts]
        produce_requests(kafka, avro_codec, batch)
    want = len(firsts) * 5
    harness.wait_for(lambda: _migrated(db) and db.query(
        "SELECT count(*), count(published_at) FROM outbox")[0] ==
        (want, want), 120, "every outbox row to be marked published")
    kafka.command("rtt 1 0")
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= want)
    # Nothing produced twice: a row in flight is not produced again.
    assert _topic_size(kafka.bootstrap, TOPIC_EVENTS) == want
    for f in firsts:
        keyed = sorted((m for m in events
                        if m["key"] == f["request_id"].encode()),
                       key=lambda m: m["offset"])
        published = [m["headers"]["event_id"].decode() for m in keyed]
        committed = [str(r[0]) for r in db.query(
            "SELECT event_id FROM outbox WHERE key = %s ORDER BY id",
            f["request_id"].encode())]
        assert published == committed
        assert len(published) == 5
    assert w.alive()

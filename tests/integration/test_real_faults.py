"""Broker faults on a real Apache Kafka broker: the broker restarted, and
killed and started again, while the worker streams.  The worker recovers
without a restart; every request gets exactly one outcome."""

import time

import pytest

import harness
from harness import TOPIC_EVENTS, request


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_broker_restart_mid_stream_loses_and_doubles_nothing(
        real_kafka, db, workers, avro_codec, how):
    w = workers(real_kafka.bootstrap, db.url)
    reqs = [request(msp_id="msp-%d" % (i % 16)) for i in range(4000)]
    encoded = [(r["msp_id"].encode(),
                avro_codec.encode("CustomerRequested", r), []) for r in reqs]
    harness.produce_all(real_kafka.bootstrap, encoded[:2000])
    harness.wait_for(lambda: _count(db) > 200, 60, "processing to start")
    if how == "restart":
        real_kafka.restart()
    else:
        real_kafka.kill()
        time.sleep(2)
        real_kafka.start()
    harness.produce_all(real_kafka.bootstrap, encoded[2000:])
    harness.wait_for(lambda: _count(db) == 4000 and db.query(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0] == 0,
        180, "every outcome to be published", interval=1)
    events = harness.read_topic(
        real_kafka.bootstrap, TOPIC_EVENTS,
        lambda ms: len({m["headers"]["event_id"] for m in ms}) >= 4000,
        timeout=120)
    ids = {avro_codec.decode(m["value"])[1]["request_id"] for m in events}
    assert ids == {r["request_id"] for r in reqs}
    assert db.query("SELECT count(*) FROM customers")[0][0] == 4000
    assert w.alive(), "the worker needed a restart"
    print("\nbroker %s: %d events for 4000 outcomes" % (how, len(events)))


def _count(db):
    try:
        return db.query("SELECT count(*) FROM requests")[0][0]
    except Exception:
        return 0

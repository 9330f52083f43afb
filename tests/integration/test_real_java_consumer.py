"""A consumer that is not librdkafka reads what the worker writes: Apache
Kafka's Java client (tests/kafka/EventReader.java) reads customer.events
and the DLQ from a real broker, with the default codec and with another,
and every record's key, value and headers come out as the contract says.
The codec is checked in the broker's log segments."""

import base64
import json
import os
import subprocess
import sys

import pytest

import harness

sys.path.insert(0, os.path.join(harness.SOURCE_DIR, "tests", "kafka"))
import broker  # noqa: E402

READER = os.path.join(harness.SOURCE_DIR, "tests", "kafka", "EventReader.java")
DEFAULT_CODEC = "gzip"  # the README's contract section
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
POISON = b"hello world"


def java_read(kafka, counts, seconds=120):
    """Runs EventReader; returns its records with bytes decoded."""
    cmd = [broker.java_binary()] + broker.TOOL_JVM_OPTS + [
        "-cp", os.path.join(broker.LIB, "*"), READER, kafka.bootstrap,
        str(seconds)] + ["%s=%d" % item for item in counts.items()]
    result = subprocess.run(cmd, capture_output=True, text=True,
                            timeout=seconds + 120)
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:],
                                    result.stderr[-3000:])

    def raw(text):
        return None if text is None else base64.b64decode(text)

    records = []
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            r["key"], r["value"] = raw(r["key"]), raw(r["value"])
            r["headers"] = [(name, raw(value)) for name, value in
                            r["headers"]]
            records.append(r)
    return records


@pytest.mark.parametrize("codec", [None, "zstd"])
def test_a_java_consumer_reads_the_events_and_the_dlq(
        codec, real_kafka, db, workers, avro_codec):
    env = {"MESH_WORKER_EVENTS_COMPRESSION": codec} if codec else {}
    workers(real_kafka.bootstrap, db.url, **env)
    created = [harness.request() for _ in range(20)]
    rejected = harness.request(licenses=0)
    # A record of the union's newest branch, after its customer's creation.
    update = harness.update_request(
        harness.customer_id(created[0]["request_id"]), licenses=30)
    headers = [("traceparent", TRACEPARENT), ("x-custom", b"\xff\x00binary")]
    harness.produce_all(real_kafka.bootstrap, [
        (b"msp-1", avro_codec.encode("CustomerRequested", r), headers)
        for r in created + [rejected]] + [
        (b"msp-1", avro_codec.encode("CustomerUpdateRequested", update),
         headers), (b"k-poison", POISON, headers)])

    records = java_read(real_kafka, {harness.TOPIC_EVENTS: 22,
                                     harness.TOPIC_DLQ: 1})

    events = {}
    for r in records:
        if r["topic"] == harness.TOPIC_EVENTS:
            h = dict(r["headers"])
            events.setdefault(h["request_id"].decode(), []).append((r, h))
    expected = [(q, "CustomerCreated") for q in created] + [
        (rejected, "CustomerRejected"), (update, "CustomerUpdated")]
    assert len(events) == len(expected), sorted(events)
    for q, kind in expected:
        rid = q["request_id"]
        assert len(events[rid]) == 1, events[rid]
        r, h = events[rid][0]
        assert h["event_type"] == kind.encode()
        assert h["event_id"] == harness.event_id(kind, rid).encode()
        assert h["traceparent"] == TRACEPARENT
        key = {"CustomerCreated": harness.customer_id(rid),
               "CustomerUpdated": q.get("customer_id")}.get(kind, rid)
        assert r["key"] == key.encode(), (r["key"], key)
        name, datum = avro_codec.decode(r["value"])
        assert name == kind and datum["request_id"] == rid, (name, datum)

    dlq = [r for r in records if r["topic"] == harness.TOPIC_DLQ]
    assert len(dlq) == 1, dlq
    assert dlq[0]["key"] == b"k-poison" and dlq[0]["value"] == POISON
    names = [name for name, _ in dlq[0]["headers"]]
    assert names[:2] == ["traceparent", "x-custom"], names
    h = dict(dlq[0]["headers"])
    assert h["x-custom"] == b"\xff\x00binary"
    assert h["dlq.reason"] == b"bad-magic"
    assert h["dlq.original.topic"] == harness.TOPIC_REQUESTS.encode()

    want = codec or DEFAULT_CODEC
    for topic in (harness.TOPIC_EVENTS, harness.TOPIC_DLQ):
        batches = real_kafka.log_batches(topic)
        assert sum(b[1] for b in batches) == (22 if topic ==
                                              harness.TOPIC_EVENTS else 1)
        assert {b[0] for b in batches} == {want}, (topic, batches)

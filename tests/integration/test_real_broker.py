"""The real-broker tier: a single-node Apache Kafka (KRaft) from
tests/kafka/broker.py, checked with confluent_kafka for what the worker's
delivery guarantees rest on and librdkafka's mock cluster does not model:
idempotent produce across a broker restart or crash (no duplicates, no
gaps) and committed group offsets that outlive the broker process.

Needs java 17+ and, the first time, mvn with Maven Central (the jars are
cached in ~/.m2 and tests/kafka/target/lib).  Without java or mvn the
module is skipped, unless MW_REQUIRE_REAL_KAFKA=1 makes that a failure.
"""

import collections
import os
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "kafka"))
import broker as kafka_broker  # noqa: E402

TOPICS = {"customer.requests": 8, "customer.events": 8,
          "customer.requests.dlq": 1}


def _report(request, text):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)


@pytest.fixture(scope="module")
def kafka(request):
    harness.real_broker_module()
    server = kafka_broker.Broker(partitions_default=8, topics=TOPICS)
    started = time.monotonic()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    _report(request, "\nreal Kafka %s broker on %s: started in %.1f s"
            % (server.version, server.bootstrap, time.monotonic() - started))
    failed = request.session.testsfailed
    yield server
    if request.session.testsfailed > failed:
        _report(request, server.log_tail())
    server.destroy()


def _topic(kafka, partitions):
    name = "t-" + uuid.uuid4().hex[:10]
    kafka.create_topic(name, partitions)
    return name


def _producer(kafka, **extra):
    conf = {"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True,
            "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random"}
    conf.update(extra)
    return Producer(conf)


def _consume(consumer, count, timeout=60):
    """Polls until count messages (or fails); returns them."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, \
            "timed out with %d of %d messages" % (len(got), count)
        for m in consumer.consume(num_messages=1000, timeout=0.5):
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, \
                    m.error()
                continue
            got.append(m)
    return got


def _committed(consumer, partitions, timeout=30):
    """consumer.committed(), retried while the group coordinator is not
    serving yet: just after a broker start it answers NOT_COORDINATOR (or
    COORDINATOR_LOAD_IN_PROGRESS) until it has loaded __consumer_offsets,
    and librdkafka hands that to the caller."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.committed(partitions, timeout=10)
        except KafkaException as e:
            code = e.args[0].code()
            if code not in (KafkaError.NOT_COORDINATOR,
                            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                            KafkaError.COORDINATOR_NOT_AVAILABLE) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_all(kafka, topic, timeout=60):
    """Every message of topic, from the beginning, by a group-less reader."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap,
                  "group.id": "reader-" + uuid.uuid4().hex,
                  "enable.auto.commit": False,
                  "enable.partition.eof": True,
                  "isolation.level": "read_uncommitted"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, -2) for p in parts])  # beginning
        out, eof = [], set()
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts):
            assert time.monotonic() < deadline, "timed out reading " + topic
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, \
                        m.error()
                    eof.add(m.partition())
                    continue
                eof.discard(m.partition())
                out.append(m)
        return out
    finally:
        c.close()


# ------------------------------------------------------------------ topics

def test_topics_have_the_partitions_asked_for(kafka):
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    md = admin.list_topics(timeout=10)
    for name, partitions in TOPICS.items():
        assert name in md.topics, sorted(md.topics)
        assert len(md.topics[name].partitions) == partitions, name
        assert all(p.leader == 1 for p in md.topics[name].partitions.values())

    name = _topic(kafka, 3)
    md = admin.list_topics(name, timeout=10)
    assert len(md.topics[name].partitions) == 3
    # The same, as Kafka's own kafka-topics tool reports it.
    text = kafka.kafka_tool("org.apache.kafka.tools.TopicCommand",
                            "--describe", "--topic", name)
    assert "PartitionCount: 3" in text, text
    # Creating it again with the same count is a no-op; another is an error.
    kafka.create_topic(name, 3)
    with pytest.raises(kafka_broker.BrokerError):
        kafka.create_topic(name, 5)


def test_no_auto_created_topics(kafka):
    """Producing to an unknown topic must fail, not create it."""
    p = _producer(kafka, **{"message.timeout.ms": 3000})
    errors = []
    p.produce("no.such.topic", b"x",
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    assert kafka.partitions("no.such.topic") is None


# ---------------------------------------------------------- produce/consume

def test_thousand_messages_round_trip_in_partition_order(kafka):
    topic = _topic(kafka, 8)
    p = _producer(kafka)
    delivered = collections.defaultdict(list)  # partition -> [(offset, i)]
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()].append((msg.offset(),
                                               int(msg.value())))

    for i in range(1000):
        p.produce(topic, key=b"k%d" % (i % 37), value=b"%d" % i,
                  on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]
    assert sum(len(v) for v in delivered.values()) == 1000
    assert len(delivered) > 1, "all messages went to one partition"
    for part, sent in delivered.items():
        # Idempotence keeps the produce order within a partition.
        assert [i for _, i in sent] == sorted(i for _, i in sent), part

    c = Consumer({"bootstrap.servers": kafka.bootstrap,
                  "group.id": "g-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = _consume(c, 1000)
        c.commit(asynchronous=False)
    finally:
        c.close()
    assert sorted(int(m.value()) for m in got) == list(range(1000))
    received = collections.defaultdict(list)
    for m in got:
        received[m.partition()].append((m.offset(), int(m.value())))
    assert set(received) == set(delivered)
    for part, sent in delivered.items():
        assert received[part] == sorted(sent), part  # offsets and order
    # The key decides the partition.
    by_key = collections.defaultdict(set)
    for m in got:
        by_key[m.key()].add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


# --------------------------------------------------------- across restarts

@pytest.mark.parametrize("how", ["restart", "kill", "pause"])
def test_idempotent_producer_exactly_once_across_broker_restart(kafka, how):
    """A producer keeps producing while the broker goes down (SIGTERM, or
    SIGKILL) and comes back, or hangs for longer than the producer's
    request timeout: every message is there once, none twice.

    Retries of batches whose acknowledgement was lost are what would
    duplicate (the "pause" case does so reliably with enable.idempotence
    off); the broker's producer state, rebuilt from its log after a
    restart, drops them.  The mock cluster has no such state, hence this
    tier."""
    topic = _topic(kafka, 4)
    total = 6000
    p = _producer(kafka, **{"message.timeout.ms": 120000,
                            "retry.backoff.ms": 100,
                            "max.in.flight.requests.per.connection": 5,
                            "batch.num.messages": 50,
                            "request.timeout.ms": 1500,
                            "socket.timeout.ms": 1500})
    errors = []
    acked = [0]

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[0] += 1

    bounce = threading.Event()
    outage = {}

    def bounce_broker():
        bounce.wait()
        t = time.monotonic()
        if how == "restart":
            kafka.restart()
        elif how == "kill":
            kafka.kill()
            kafka.start()
        else:
            kafka.pause()
            time.sleep(4)
            kafka.resume()
        outage["seconds"] = time.monotonic() - t

    bouncer = threading.Thread(target=bounce_broker)
    bouncer.start()
    try:
        for i in range(total):
            if i == total // 3:
                bounce.set()
            while True:
                try:
                    p.produce(topic, key=b"k%d" % (i % 101), value=b"%d" % i,
                              on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            if i % 100 == 0:
                time.sleep(0.1)  # a steady stream (~6 s), not one burst
    finally:
        bounce.set()
        bouncer.join()
    assert "seconds" in outage, "the broker did not come back"
    left = p.flush(120)
    assert left == 0 and not errors, (left, errors[:3])
    assert acked[0] == total

    values = [int(m.value()) for m in _read_all(kafka, topic)]
    counts = collections.Counter(values)
    dupes = {v: n for v, n in counts.items() if n > 1}
    assert not dupes, "duplicates after %s: %d, e.g. %r" % (
        how, len(dupes), sorted(dupes.items())[:5])
    assert sorted(counts) == list(range(total)), "missing: %r" % (
        sorted(set(range(total)) - set(counts))[:10])


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_committed_group_offset_survives_broker_restart(kafka, how):
    topic = _topic(kafka, 2)
    p = _producer(kafka)
    for i in range(200):
        p.produce(topic, value=b"%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    group = "g-" + uuid.uuid4().hex
    conf = {"bootstrap.servers": kafka.bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}

    c = Consumer(conf)
    try:
        c.subscribe([topic])
        _consume(c, 200)
        c.commit(offsets=[TopicPartition(topic, 0, 40),
                          TopicPartition(topic, 1, 70)], asynchronous=False)
    finally:
        c.close()

    if how == "restart":
        kafka.restart()
    else:
        kafka.kill()
        kafka.start()

    c = Consumer(conf)
    try:
        committed = _committed(c, [TopicPartition(topic, 0),
                                   TopicPartition(topic, 1)])
        assert {tp.partition: tp.offset for tp in committed} == {0: 40,
                                                                 1: 70}
        c.subscribe([topic])
        got = _consume(c, 200 - 40 - 70)
        first = {}
        for m in got:
            first.setdefault(m.partition(), m.offset())
        assert first == {0: 40, 1: 70}
    finally:
        c.close()

"""librdkafka properties from MESH_WORKER_KAFKA_*: the ones the worker's
guarantees depend on are refused at start naming the variable, and every
other one reaches exactly the clients it applies to, without librdkafka's
configuration warnings."""

import json
import os
import subprocess

import pytest

import harness

# (variable, value): each would break a guarantee the README lists.
REFUSED = [
    ("MESH_WORKER_KAFKA_ENABLE_AUTO_COMMIT", "true"),
    ("MESH_WORKER_KAFKA_CONSUMER_ENABLE_AUTO_COMMIT", "true"),
    ("MESH_WORKER_KAFKA_AUTO_COMMIT_ENABLE", "true"),
    ("MESH_WORKER_KAFKA_ENABLE_AUTO_OFFSET_STORE", "true"),
    ("MESH_WORKER_KAFKA_OFFSET_STORE_METHOD", "file"),
    ("MESH_WORKER_KAFKA_ISOLATION_LEVEL", "read_uncommitted"),
    ("MESH_WORKER_KAFKA_PARTITION_ASSIGNMENT_STRATEGY", "range"),
    ("MESH_WORKER_KAFKA_AUTO_OFFSET_RESET", "latest"),
    ("MESH_WORKER_KAFKA_GROUP_ID", "other"),
    ("MESH_WORKER_KAFKA_ENABLE_IDEMPOTENCE", "false"),
    ("MESH_WORKER_KAFKA_PRODUCER_ENABLE_IDEMPOTENCE", "false"),
    ("MESH_WORKER_KAFKA_ACKS", "1"),
    ("MESH_WORKER_KAFKA_REQUEST_REQUIRED_ACKS", "0"),
    ("MESH_WORKER_KAFKA_MESSAGE_TIMEOUT_MS", "30000"),
    ("MESH_WORKER_KAFKA_DELIVERY_TIMEOUT_MS", "30000"),
    ("MESH_WORKER_KAFKA_RETRIES", "3"),
    ("MESH_WORKER_KAFKA_QUEUING_STRATEGY", "lifo"),
    ("MESH_WORKER_KAFKA_PARTITIONER", "random"),
    ("MESH_WORKER_KAFKA_TRANSACTIONAL_ID", "mesh"),
    ("MESH_WORKER_KAFKA_COMPRESSION_TYPE", "gzip"),
    ("MESH_WORKER_KAFKA_PRODUCER_COMPRESSION_CODEC", "gzip"),
    ("MESH_WORKER_KAFKA_PRODUCER_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
    # A property for the wrong kind of client, and values librdkafka or
    # the worker do not know.
    ("MESH_WORKER_KAFKA_PRODUCER_SESSION_TIMEOUT_MS", "6000"),
    ("MESH_WORKER_KAFKA_CONSUMER_LINGER_MS", "5"),
    ("MESH_WORKER_KAFKA_LINGER_MS", "soon"),
    ("MESH_WORKER_EVENTS_COMPRESSION", "brotli"),
]


def run(args, env, timeout=60):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("MESH_WORKER_")}
    full.update(env)
    return subprocess.run([harness.WORKER] + args, env=full,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("variable,value", REFUSED)
@pytest.mark.parametrize("command", ["run", "tail"])
def test_a_property_the_guarantees_depend_on_stops_start_up(command, variable,
                                                            value):
    result = run([command], env={
        "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MESH_WORKER_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "MESH_WORKER_DATABASE_WAIT": "0",
        "MESH_WORKER_HTTP_ADDR": "",
        variable: value})
    assert result.returncode == 2, (result.returncode, result.stderr)
    first = result.stderr.splitlines()[0]
    assert variable in first, result.stderr


@pytest.mark.parametrize("variable,value", [
    ("MESH_WORKER_KAFKA_ENABLE_AUTO_COMMIT", "false"),
    ("MESH_WORKER_KAFKA_ACKS", "-1"),
    ("MESH_WORKER_KAFKA_AUTO_OFFSET_RESET", "smallest"),
    ("MESH_WORKER_EVENTS_COMPRESSION", "none"),
])
def test_the_workers_own_value_is_accepted(variable, value):
    result = run(["run"], env={
        "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MESH_WORKER_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "MESH_WORKER_DATABASE_WAIT": "0",
        "MESH_WORKER_HTTP_ADDR": "",
        variable: value})
    # It gets as far as the database, which is not there.
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "PostgreSQL" in result.stderr, result.stderr


def client_configurations(log_text):
    """Maps each librdkafka client name to the lines of its configuration
    dump (debug=conf), and returns every CONFWARN line."""
    dumps, warnings = {}, []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("module") != "librdkafka":
            continue
        if entry.get("facility") == "CONFWARN":
            warnings.append(entry.get("detail"))
        if entry.get("facility") == "CONF":
            dumps.setdefault(entry["client"], []).append(
                entry["detail"].split("]: ", 1)[-1].strip())
    return dumps, warnings


def test_each_property_reaches_only_the_clients_it_applies_to(
        db, kafka, workers, avro_codec):
    w = workers(kafka.bootstrap, db.url,
                MESH_WORKER_LOG_LEVEL="debug",
                MESH_WORKER_KAFKA_LOG_LEVEL="7",
                MESH_WORKER_KAFKA_DEBUG="conf",
                # producer only
                MESH_WORKER_KAFKA_LINGER_MS="3",
                # consumer only
                MESH_WORKER_KAFKA_SESSION_TIMEOUT_MS="7000",
                # both, and for the consumer alone another value
                MESH_WORKER_KAFKA_SOCKET_CONNECTION_SETUP_TIMEOUT_MS="20000",
                MESH_WORKER_KAFKA_CONSUMER_SOCKET_CONNECTION_SETUP_TIMEOUT_MS=(
                    "25000"),
                # for the producer alone
                MESH_WORKER_KAFKA_PRODUCER_BATCH_NUM_MESSAGES="5000")
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", avro_codec.encode("CustomerRequested",
                                     harness.request()), [])])
    harness.read_topic(kafka.bootstrap, harness.TOPIC_EVENTS,
                       lambda ms: len(ms) >= 1)
    assert w.stop() == 0
    dumps, warnings = client_configurations(w.log_text())
    assert warnings == [], warnings
    relay = [c for c in dumps if c.startswith("mesh-worker-relay#producer")]
    consumer = [c for c in dumps if c.startswith("mesh-worker#consumer")]
    assert len(relay) == 1 and len(consumer) == 1, sorted(dumps)
    produced, consumed = dumps[relay[0]], dumps[consumer[0]]
    for line in ("queue.buffering.max.ms = 3",
                 "socket.connection.setup.timeout.ms = 20000",
                 "batch.num.messages = 5000",
                 "enable.idempotence = true",
                 # the events' default codec, at its fastest level
                 "compression.codec = gzip",
                 "compression.level = 1"):
        assert line in produced, (line, produced)
    for line in ("session.timeout.ms = 7000",
                 "socket.connection.setup.timeout.ms = 25000",
                 "enable.auto.commit = false"):
        assert line in consumed, (line, consumed)
    assert not any(l.startswith("session.timeout.ms") for l in produced)
    assert not any(l.startswith("queue.buffering.max.ms") or
                   l.startswith("batch.num.messages") for l in consumed)

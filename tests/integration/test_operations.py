"""Operating the worker: health, readiness and metrics over HTTP, a
PostgreSQL outage mid-stream, graceful shutdown, and logs that are JSON
and keep secrets out.  Real PostgreSQL, librdkafka's mock cluster."""

import json
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request


def http_port(worker):
    def find():
        for line in worker.log_text().splitlines():
            if '"health and metrics listening"' in line:
                return json.loads(line)["port"]
        return None
    return harness.wait_for(find, 30, "the HTTP listener")


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics(port):
    status, text = get(port, "/metrics")
    assert status == 200
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def customers(db):
    """Customers provisioned so far (0 before the worker has migrated)."""
    try:
        return db.query("SELECT count(*) FROM customers")[0][0]
    except Exception:
        return 0


def start(workers, kafka, url, **env):
    env.setdefault("MESH_WORKER_HTTP_ADDR", "127.0.0.1:0")
    return workers(kafka.bootstrap, url, **env)


def test_health_readiness_and_metrics_count_what_happened(
        db, kafka, workers, avro_codec):
    w = start(workers, kafka, db.url)
    port = http_port(w)
    assert get(port, "/healthz")[0] == 200
    harness.wait_for(lambda: get(port, "/readyz")[0] == 200, 60,
                     "readiness after joining the group")
    valid = [request() for _ in range(40)]
    invalid = [request(licenses=0) for _ in range(7)]
    garbage = [b"not avro %d" % i for i in range(3)]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", avro_codec.encode("CustomerRequested", r), [])
        for r in valid + invalid] + [(b"x", g, []) for g in garbage])
    harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                       lambda ms: len(ms) >= 47)
    harness.read_topic(kafka.bootstrap, TOPIC_DLQ, lambda ms: len(ms) >= 3)
    m = harness.wait_for(
        lambda: (lambda m: m if m["mesh_worker_events_published_total"]
                 >= 50 else None)(metrics(port)), 30, "published counter")
    assert m["mesh_worker_requests_consumed_total"] == 50
    assert m["mesh_worker_customers_provisioned_total"] == 40
    assert m["mesh_worker_requests_rejected_total"] == 7
    assert m["mesh_worker_dlq_messages_total"] == 3
    assert m["mesh_worker_events_published_total"] == 50
    assert m["mesh_worker_ready"] == 1
    assert m['mesh_worker_batch_duration_seconds_bucket{le="+Inf"}'] == \
        m["mesh_worker_batch_duration_seconds_count"] >= 1
    assert "mesh_worker_consumer_lag_messages" in m
    assert "mesh_worker_outbox_backlog_rows" in m
    assert get(port, "/nope")[0] == 404


def test_database_outage_pauses_and_resumes_without_loss(
        kafka, workers, avro_codec):
    pg = harness.Postgres().start()
    try:
        w = start(workers, kafka, pg.url)
        port = http_port(w)
        harness.wait_for(lambda: get(port, "/readyz")[0] == 200, 60,
                         "readiness")
        first = [request() for _ in range(200)]
        harness.produce_all(kafka.bootstrap, [
            (b"msp-1", avro_codec.encode("CustomerRequested", r), [])
            for r in first])
        harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                           lambda ms: len(ms) >= 200)
        pg.stop("immediate")
        status, body = harness.wait_for(
            lambda: (lambda r: r if r[0] == 503 else None)(
                get(port, "/readyz")), 30, "not-ready during the outage")
        assert "PostgreSQL" in json.loads(body)["reason"]
        second = [request() for _ in range(300)]
        harness.produce_all(kafka.bootstrap, [
            (b"msp-%d" % (i % 5), avro_codec.encode("CustomerRequested", r),
             []) for i, r in enumerate(second)])
        time.sleep(30)  # a 30 s outage, met with messages in hand
        assert w.alive()
        back = time.monotonic()
        pg.start()
        events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                    lambda ms: len(ms) >= 500, timeout=120)
        print("resumed: all outcomes %.1f s after PostgreSQL returned"
              % (time.monotonic() - back))
        harness.wait_for(lambda: get(port, "/readyz")[0] == 200, 30,
                         "readiness after the outage")
        seen = {avro_codec.decode(m["value"])[1]["request_id"]
                for m in events}
        assert seen == {r["request_id"] for r in first + second}
        assert pg.query("SELECT count(*) FROM customers")[0][0] == 500
        dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ,
                                 lambda ms: True, timeout=5)
        assert dlq == []
        m = metrics(port)
        assert m["mesh_worker_batch_failures_total"] >= 1
        assert m["mesh_worker_customers_provisioned_total"] == 500
        assert w.stop() == 0
    finally:
        pg.destroy()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_the_batch_commits_and_exits_zero(
        db, kafka, workers, avro_codec, sig):
    # Small batches, many of them: the signal must land while work remains,
    # however fast the machine.
    total = 6000
    reqs = [request() for _ in range(total)]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-%d" % (i % 8), avro_codec.encode("CustomerRequested", r), [])
        for i, r in enumerate(reqs)])
    w = start(workers, kafka, db.url, MESH_WORKER_BATCH_SIZE="10")
    harness.wait_for(lambda: customers(db) > 0, 60,
                     "the worker to be busy", interval=0.02)
    sent = time.monotonic()
    w.proc.send_signal(sig)
    assert w.proc.wait(timeout=30) == 0
    print("graceful shutdown took %.2f s" % (time.monotonic() - sent))
    w.log.close()
    done = db.query("SELECT count(*) FROM customers")[0][0]
    assert done < total, "the worker finished everything before SIGTERM"
    # Everything committed was published before exit.
    assert db.query("SELECT count(*) FROM outbox WHERE published_at IS "
                    "NULL")[0][0] == 0
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= done)
    assert len(events) == done
    # A successor resumes from the committed offsets: nothing twice.
    w2 = start(workers, kafka, db.url)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= total, timeout=120)
    time.sleep(2)
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= total)
    assert len(events) == total
    m = metrics(http_port(w2))
    assert m["mesh_worker_requests_duplicate_total"] == 0
    assert w2.stop() == 0
    log = w.log_text()
    assert '"msg":"stopped"' in log


def test_logs_are_json_lines_without_secrets(pg, kafka, workers, avro_codec):
    secret = "Sup3r-S3cret"
    url = pg.url.replace("postgres@", "postgres:%s@" % secret)
    w = start(workers, kafka, url,
              MESH_WORKER_LOG_LEVEL="debug",
              MESH_WORKER_KAFKA_SASL_PASSWORD=secret,
              MESH_WORKER_KAFKA_SASL_USERNAME="user")
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", avro_codec.encode("CustomerRequested", request()), [])])
    harness.read_topic(kafka.bootstrap, TOPIC_EVENTS, lambda ms: len(ms) >= 1)
    assert w.stop() == 0
    text = w.log_text()
    assert secret not in text
    lines = text.splitlines()
    assert len(lines) > 5
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "module", "msg"} <= set(entry)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
                        entry["ts"])


def test_connections_killed_mid_transaction_lose_and_double_nothing(
        db, kafka, workers, avro_codec):
    reqs = [request() for _ in range(2000)]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-%d" % (i % 8), avro_codec.encode("CustomerRequested", r), [])
        for i, r in enumerate(reqs)])
    w = start(workers, kafka, db.url, MESH_WORKER_BATCH_SIZE="100")
    killed = 0
    deadline = time.monotonic() + 120
    while customers(db) < 2000 and time.monotonic() < deadline:
        rows = db.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")
        killed += rows[0][0]
        time.sleep(0.3)
    print("terminated %d worker connections mid-stream" % killed)
    assert killed >= 3
    events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                lambda ms: len(ms) >= 2000, timeout=120)
    ids = [avro_codec.decode(m["value"])[1]["request_id"] for m in events]
    assert set(ids) == {r["request_id"] for r in reqs}
    assert db.query("SELECT count(*) FROM customers")[0][0] == 2000
    assert db.query("SELECT count(*) FROM requests")[0][0] == 2000
    assert w.alive()


def test_stop_during_a_rebalance_still_exits_zero(db, kafka, workers):
    """SIGTERM while the group is still handing partitions around.  (The
    one shutdown hang seen, under the sanitizer build, was in this window;
    this test did not reproduce it on demand, so it guards the path rather
    than proving the fix.)"""
    for round_ in range(3):
        w1 = start(workers, kafka, db.url)
        harness.wait_for(lambda: "partitions assigned" in w1.log_text(), 60,
                         "the first replica to join")
        w2 = start(workers, kafka, db.url)
        harness.wait_for(lambda: "partitions assigned" in w2.log_text(), 60,
                         "the second replica to join")
        w1.proc.send_signal(signal.SIGTERM)
        w2.proc.send_signal(signal.SIGTERM)
        assert w1.proc.wait(timeout=30) == 0, "round %d" % round_
        assert w2.proc.wait(timeout=30) == 0, "round %d" % round_
        w1.log.close()
        w2.log.close()

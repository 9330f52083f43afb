"""PostgreSQL failover under load, on a real Apache Kafka broker: a
primary with a synchronous streaming standby, two worker replicas whose
URL names both hosts (target_session_attrs=read-write), the crash test's
mixed requests produced while they work, and trials short enough that
their timers fire before, across and after the failover.

Mid-stream the primary is stopped at once (pg_ctl stop -m immediate) and
the standby promoted.  The workers are never restarted: they must find
the new primary by themselves.  Afterwards every guarantee of the crash
test holds on the new primary, every timer fired once, and the relay and
the scheduler ran there.  The test prints the time from promotion to the
first new commit."""

import json
import threading
import time
import urllib.request

import guarantees
import harness
import pg_cluster
from conftest import Database
from harness import TOPIC_EVENTS

TOTAL = 10000
TRIALS = 1000
CHUNKS = 20


def readiness(port):
    """(HTTP status, body) of /readyz."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port,
                                    timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def test_primary_crash_and_promotion_lose_and_double_nothing(
        real_kafka, avro_codec, workers):
    pair = pg_cluster.ReplicatedPostgres(is_synchronous=True)
    try:
        run_failover(pair, real_kafka, avro_codec, workers)
    finally:
        pair.destroy()


def run_failover(pair, real_kafka, avro_codec, workers):
    pair.primary.query("CREATE DATABASE mesh")
    load = guarantees.build_requests(avro_codec, TOTAL, trials=TRIALS)
    messages = load.messages
    ports = [harness.free_port(), harness.free_port()]
    # Trials end 8 s after creation, reminded 4 s before: timers fall
    # due before, during and after the failover.  Published outbox rows
    # are kept so that every committed event can be read back.
    env = {"MESH_WORKER_OUTBOX_RETENTION": "1h",
           "MESH_WORKER_TRIAL_PERIOD": "8s",
           "MESH_WORKER_TRIAL_REMINDER": "4s",
           "MESH_WORKER_SCHEDULER_INTERVAL": "200ms"}
    replicas = [workers(real_kafka.bootstrap, pair.url("mesh"),
                        MESH_WORKER_HTTP_ADDR="127.0.0.1:%d" % port, **env)
                for port in ports]
    for port in ports:
        harness.wait_for(lambda: readiness(port)[0] == 200, 60,
                         "the replica to be ready")

    chunk = len(messages) // CHUNKS
    producing_failed = []

    def produce():
        try:
            for k in range(CHUNKS):
                harness.produce_all(real_kafka.bootstrap, [
                    (key, value, [("traceparent", b"00-%032x-%016x-01" % (
                        k + 1, k + 1))])
                    for key, value, _, _ in
                    messages[k * chunk:(k + 1) * chunk]])
                time.sleep(1)
        except BaseException as e:
            producing_failed.append(e)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        old = Database(pair.primary, "mesh")
        harness.wait_for(lambda: old.query(
            "SELECT count(*) FROM requests")[0][0] >= TOTAL // 2 and
            old.query("SELECT count(*) FROM timer_history")[0][0] > 0, 120,
            "half the requests and a timer before the crash")
        fired_before = old.query(
            "SELECT count(*) FROM timer_history")[0][0]

        crashed_at = time.time()
        pair.crash_primary()
        # The time an operator or an orchestrator takes to decide.
        time.sleep(2)
        not_ready = [readiness(port) for port in ports]
        new = Database(pair.standby, "mesh")
        promoted_at = pair.promote()
        at_promotion = new.query("SELECT count(*) FROM requests")[0][0]
        first_commit_at = harness.wait_for(
            lambda: new.query("SELECT count(*) FROM requests")[0][0] >
            at_promotion and time.time(), 120,
            "a commit on the new primary", interval=0.05)
        for port in ports:
            harness.wait_for(lambda: readiness(port)[0] == 200, 60,
                             "the replica to be ready again")
        ready_again_at = time.time()
    finally:
        producer.join()
    assert not producing_failed, producing_failed

    distinct = {r["request_id"] for r in load.valid + load.invalid}
    harness.wait_for(
        lambda: new.query("SELECT count(*) FROM requests")[0][0] ==
        len(distinct) and new.query(
            "SELECT count(*) FROM timers")[0][0] == 0
        and new.query("SELECT count(*) FROM outbox WHERE published_at IS "
                      "NULL")[0][0] == 0, 300,
        "every outcome, every timer fired and the outbox published",
        interval=1)
    stats = guarantees.check_guarantees(new, real_kafka.bootstrap, load)

    # Every timer fired once: two a trial, each fired, each event once
    # in the outbox, the customers converted.
    assert new.query(
        "SELECT count(*), count(DISTINCT (customer_id, kind)), "
        "count(fired_at) FROM timer_history") == [(2 * TRIALS, 2 * TRIALS,
                                            2 * TRIALS)]
    assert new.query("SELECT count(*) FROM customers WHERE account_type = "
                     "'TRIAL' AND billable AND billing_starts_at = "
                     "trial_ends_at")[0][0] == TRIALS
    timer_events = harness.read_topic(
        real_kafka.bootstrap, TOPIC_EVENTS,
        lambda ms: sum(1 for m in ms if m["headers"]["event_type"] in (
            b"TrialEnding", b"TrialConverted")) >= 2 * TRIALS)
    ids = {m["headers"]["event_id"] for m in timer_events
           if m["headers"]["event_type"] in (b"TrialEnding",
                                             b"TrialConverted")}
    assert len(ids) == 2 * TRIALS

    # The scheduler and the relay ran on the new primary, and the same
    # worker processes did it.
    promoted = "to_timestamp(%f)" % promoted_at
    fired_after = new.query("SELECT count(*) FROM timer_history "
                            "WHERE fired_at > " + promoted)[0][0]
    published_after = new.query("SELECT count(*) FROM outbox WHERE "
                                "published_at > " + promoted)[0][0]
    assert fired_before > 0 and fired_after > 0 and published_after > 0
    assert all(w.alive() for w in replicas)
    assert all(status == 503 for status, _ in not_ready), not_ready
    logs = "".join(w.log_text() for w in replicas)
    assert "replicates asynchronously" not in logs

    print("\nfailover: %d messages, %d created, %d rejected, %d conflicts, "
          "%d events (%d re-published), %d DLQ; %d requests before the "
          "crash, %d timers fired before it, %d after the promotion, %d "
          "events published after it; promotion %.2f s after the crash; "
          "first commit %.2f s after the promotion; both replicas ready "
          "%.2f s after it; not ready meanwhile: %s" % (
              TOTAL, stats["created"], stats["rejected"], stats["conflicts"],
              stats["events"], stats["republished"], stats["dlq"],
              at_promotion, fired_before, fired_after, published_after,
              promoted_at - crashed_at, first_commit_at - promoted_at,
              ready_again_at - promoted_at, not_ready[0][1]))
    seen = set()
    for line in logs.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        what = (entry.get("level"), entry.get("module"), entry.get("msg"))
        if what[0] in ("warn", "error") and what[1] != "librdkafka" and \
                what not in seen:
            seen.add(what)
            print(" ".join(map(str, what)), entry.get("error", ""),
                  entry.get("detail", "")[:120])
    for w in replicas:
        assert w.stop() == 0

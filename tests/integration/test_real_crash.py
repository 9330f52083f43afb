"""The crash test, on a real Apache Kafka broker: two replicas, 50,000
requests (valid, invalid, duplicated, conflicting and a few undecodable)
and 2,000 updates of the customers they create, and a random replica
SIGKILLed and restarted 20 times while they work.

Afterwards every request id has exactly one outcome in PostgreSQL, no
domain has two live customers, every outcome is on customer.events at
least once with re-publications identical in event_id and bytes, the
events of each key are in commit order, and the undecodable messages are
in the DLQ exactly as consumed; each update is applied exactly once and
its customer's events come in request order."""

import random
import time

import guarantees
import harness


TOTAL = 50000
UPDATES = 2000
KILLS = 20


def test_two_replicas_killed_twenty_times_keep_every_guarantee(
        real_kafka, avro_codec, tmp_path):
    pg = harness.Postgres().start()
    started = []
    try:
        load = guarantees.build_requests(avro_codec, TOTAL, updates=UPDATES)
        messages = load.messages
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

        guarantees.wait_processed(pg, load)
        elapsed = time.monotonic() - t0
        counts = guarantees.check_guarantees(pg, real_kafka.bootstrap, load)
        print("\ncrash test: %d messages and %d updates, %d kills, %.0f s: "
              "%d created, %d "
              "rejected, %d conflicts, %d duplicates absorbed, %d events "
              "(%d re-published), %d DLQ messages (%d distinct)" % (
                  TOTAL, UPDATES, KILLS, elapsed, counts["created"],
                  counts["rejected"], counts["conflicts"], load.duplicates,
                  counts["events"], counts["republished"], counts["dlq"],
                  len(load.garbage)))
        for w in replicas:
            assert w.stop() == 0
    finally:
        for w in started:
            w.destroy()
        pg.destroy()

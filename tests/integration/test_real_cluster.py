"""Kafka as production runs it: a three-node KRaft cluster
(tests/kafka/broker.py Cluster: replication factor 3, min.insync.replicas=2,
no unclean leader election) under the crash test's kind of load, with two
worker replicas.  While they work, the node leading most of the traffic on
customer.requests and customer.events is killed (SIGKILL) and restarted,
then the node coordinating the workers' group.

Afterwards every guarantee of guarantees.check_guarantees holds (each
request one outcome, every outcome on customer.events with a stable
event_id, per-key order, the DLQ exact), the workers were never restarted,
and the duplicates on customer.events are counted.  Recovery is measured
from each kill: to the first commit of a request produced afterwards to a
partition the dead node led, to the first event appended to such a
partition, and to the group's next offset commit in Kafka.  Both topics
take the broker's time (LogAppendTime), so a record shows when it reached
the cluster.
"""

import threading
import time
import zlib

from confluent_kafka import Consumer, TopicPartition

import guarantees
import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, TOPIC_REQUESTS

TOTAL = 10000
PARTITIONS = 8
GROUP = "mesh-worker"
# The load lasts about this long: the two faults take about 45 s on
# 2 cores, longer when the machine is busy.
FEED_SECONDS = 75


def partition_of(key):
    return zlib.crc32(key) % PARTITIONS


class Feeder(threading.Thread):
    """Produces the load at an even pace, each key to one partition."""

    def __init__(self, bootstrap, messages):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.messages = messages
        self.failures = []
        self.done = False

    def run(self):
        p = harness.producer(self.bootstrap)
        chunk = max(1, len(self.messages) * 5 // (FEED_SECONDS * 10))
        started = time.monotonic()
        try:
            for n, i in enumerate(range(0, len(self.messages), chunk)):
                for key, value, _, _ in self.messages[i:i + chunk]:
                    p.produce(TOPIC_REQUESTS, key=key, value=value,
                              partition=partition_of(key),
                              on_delivery=self.report)
                p.poll(0)
                time.sleep(max(0.0, started + (n + 1) * 0.5 -
                               time.monotonic()))
            left = p.flush(300)
            if left:
                self.failures.append("%d messages not delivered" % left)
        finally:
            self.done = True

    def report(self, err, msg):
        if err is not None:
            self.failures.append(err)


def load_per_node(cluster, admin):
    """{node id: messages in the partitions it leads} over both topics,
    and the partitions each node leads."""
    load, led = {}, {}
    for topic in (TOPIC_REQUESTS, TOPIC_EVENTS):
        for p, leader in cluster.leaders(topic).items():
            low, high = admin.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10)
            load[leader] = load.get(leader, 0) + high - low
            led.setdefault(leader, {}).setdefault(topic, []).append(p)
    return load, led


def committed_total(admin):
    parts = admin.committed([TopicPartition(TOPIC_REQUESTS, p)
                             for p in range(PARTITIONS)], timeout=3)
    return sum(max(tp.offset, 0) for tp in parts)


def kill_and_recover(cluster, victim, offsets, feeder, what):
    """Kills node victim, waits until no partition names it leader and
    the group commits offsets again (when the load ended, at most 30 s
    for that), restarts it and waits until every replica is in sync.
    Returns the fault's record."""
    led = {t: [p for p, leader in cluster.leaders(t).items()
               if leader == victim] for t in (TOPIC_REQUESTS, TOPIC_EVENTS)}
    before = committed_total(offsets)
    killed_at = time.time()
    t0 = time.monotonic()
    cluster.nodes[victim].kill()
    under_load = not feeder.done
    moved = committed = None
    deadline = t0 + 120
    while moved is None or (committed is None and not (
            feeder.done and time.monotonic() > t0 + 30)):
        assert time.monotonic() < deadline, (
            "%s: leaders moved after %s s, offsets committed after %s s"
            % (what, moved, committed))
        if moved is None and all(
                victim not in cluster.leaders(t).values()
                for t in (TOPIC_REQUESTS, TOPIC_EVENTS)):
            moved = time.monotonic() - t0
        if committed is None:
            try:
                if committed_total(offsets) > before:
                    committed = time.monotonic() - t0
            except Exception:
                pass  # no coordinator yet
        time.sleep(0.2)
    time.sleep(3)  # the survivors carry the load a while
    t1 = time.monotonic()
    cluster.nodes[victim].start()
    cluster.wait_in_sync([TOPIC_REQUESTS, TOPIC_EVENTS, TOPIC_DLQ,
                          "__consumer_offsets"])
    return {"what": what, "node": victim, "led": led, "killed_at": killed_at,
            "under_load": under_load, "leaders_moved": moved,
            "offsets_committed": committed,
            "back_in_sync": time.monotonic() - t1}


def first_after(items, since):
    """Seconds from since to the earliest of items (epoch seconds) after
    it, or None."""
    later = [t for t in items if t > since]
    return min(later) - since if later else None


def test_three_node_cluster_loses_nothing_when_leaders_die(avro_codec):
    kafka_broker = harness.real_broker_module()
    cluster = kafka_broker.Cluster(
        partitions_default=PARTITIONS,
        topics={TOPIC_REQUESTS: PARTITIONS, TOPIC_EVENTS: PARTITIONS,
                TOPIC_DLQ: 1},
        topic_config={t: {"message.timestamp.type": "LogAppendTime"}
                      for t in (TOPIC_REQUESTS, TOPIC_EVENTS)})
    pg = harness.Postgres()
    workers, offsets = [], None
    try:
        cluster.start()
        pg.start()
        load = guarantees.build_requests(avro_codec, TOTAL)
        env = {"MESH_WORKER_OUTBOX_RETENTION": "1h"}
        workers = [harness.Worker(cluster.bootstrap, pg.url, env=env,
                                  name="r%d" % i).start() for i in range(2)]
        offsets = Consumer({"bootstrap.servers": cluster.bootstrap,
                            "group.id": GROUP, "enable.auto.commit": False})
        feeder = Feeder(cluster.bootstrap, load.messages)
        t0 = time.monotonic()
        feeder.start()
        harness.wait_for(lambda: pg.count(
            "SELECT count(*) FROM requests") >= TOTAL // 10, 120,
            "the workers to be busy")

        traffic, led = load_per_node(cluster, offsets)
        victim = max(traffic, key=traffic.get)
        faults = [kill_and_recover(cluster, victim, offsets, feeder,
                                   "leader of the busiest partitions")]
        coordinator = harness.wait_for(lambda: cluster.coordinator(GROUP),
                                       60, "a group coordinator")
        faults.append(kill_and_recover(cluster, coordinator, offsets,
                                       feeder, "group coordinator"))
        # The first fault meets the load for certain, the second unless
        # the machine is very slow; recovery is measured under load only.
        assert faults[0]["under_load"]
        feeder.join(600)
        assert feeder.done and not feeder.failures, feeder.failures[:3]

        guarantees.wait_processed(pg, load)
        elapsed = time.monotonic() - t0
        counts = guarantees.check_guarantees(pg, cluster.bootstrap, load)
        for w in workers:
            assert w.alive(), "a worker exited:\n" + w.log_text()[-3000:]

        # Recovery, from the records' times.
        appended = harness.read_topic(cluster.bootstrap, TOPIC_REQUESTS,
                                      lambda ms: len(ms) >= TOTAL)
        processed = {r: t.timestamp() for r, t in pg.query(
            "SELECT request_id, processed_at FROM requests")}
        # Each request's first message (a redelivery or a conflict is
        # answered from the first one's outcome).
        decoded, seen = {}, set()
        for m in sorted(appended, key=lambda m: (m["partition"],
                                                  m["offset"])):
            if m["key"].startswith(b"msp-"):
                rid = avro_codec.decode(m["value"])[1]["request_id"]
                if rid not in seen:
                    seen.add(rid)
                    decoded[(m["partition"], m["offset"])] = rid
        lines = []
        for f in faults:
            since = f["killed_at"]
            commits = [processed[decoded[(m["partition"], m["offset"])]]
                       for m in appended
                       if m["partition"] in f["led"][TOPIC_REQUESTS] and
                       (m["partition"], m["offset"]) in decoded and
                       m["timestamp"] / 1000 > since]
            published = [m["timestamp"] / 1000 for m in counts["topic"]
                         if m["partition"] in f["led"][TOPIC_EVENTS]]
            f["first_commit"] = first_after(commits, since)
            f["first_event"] = first_after(published, since)
            if f["under_load"]:
                assert f["first_commit"] is not None, f
                assert f["offsets_committed"] is not None, f
            lines.append(
                "  %s (node %d, leading requests %s, events %s): leaders "
                "moved %.1f s, first commit of a request produced after "
                "the kill %s, first event on its partitions %s, group "
                "offsets committed %s; back in sync %.1f s after "
                "restart%s" % (
                    f["what"], f["node"], f["led"][TOPIC_REQUESTS],
                    f["led"][TOPIC_EVENTS], f["leaders_moved"],
                    "%.1f s" % f["first_commit"]
                    if f["first_commit"] is not None else "none",
                    "%.1f s" % f["first_event"]
                    if f["first_event"] is not None else "none",
                    "%.1f s" % f["offsets_committed"]
                    if f["offsets_committed"] is not None else "none",
                    f["back_in_sync"],
                    "" if f["under_load"] else " (the load had ended)"))
        print("\ncluster test: %d messages, %.0f s: %d created, %d rejected, "
              "%d conflicts, %d duplicates absorbed, %d events (%d "
              "duplicates on customer.events), %d DLQ messages\n%s" % (
                  TOTAL, elapsed, counts["created"], counts["rejected"],
                  counts["conflicts"], load.duplicates, counts["events"],
                  counts["republished"], counts["dlq"], "\n".join(lines)))
        for w in workers:
            assert w.stop() == 0
    except BaseException:
        for w in workers:
            print("---- %s (last 30 lines) ----\n%s" % (
                w.log_path, "\n".join(w.log_text().splitlines()[-30:])))
        raise
    finally:
        if offsets is not None:
            offsets.close()
        for w in workers:
            w.destroy()
        pg.destroy()
        cluster.destroy()

"""Why PostgreSQL must replicate synchronously: with an asynchronous
standby, batches the worker committed, published and whose offsets Kafka
keeps are missing from the standby once it is promoted, and nothing ever
brings them back.  The standby's replication is cut (as a network fault
between the two would) while the primary goes on committing; the primary
then crashes and the standby is promoted.  Kafka is librdkafka's mock
cluster: the test shows a loss, it proves no guarantee."""

import json

from confluent_kafka import Consumer, TopicPartition

import harness
import pg_cluster
from conftest import Database
from harness import TOPIC_EVENTS, TOPIC_REQUESTS, request

PARTITIONS = 4
LOST = 200


def committed_offsets(bootstrap):
    """The sum of the worker group's committed offsets on the requests."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "mesh-worker",
                  "enable.auto.commit": False})
    try:
        parts = c.committed([TopicPartition(TOPIC_REQUESTS, p)
                             for p in range(PARTITIONS)], timeout=10)
        return sum(max(tp.offset, 0) for tp in parts)
    finally:
        c.close()


def test_async_standby_promoted_without_committed_batches_loses_them(
        avro_codec, workers):
    pair = pg_cluster.ReplicatedPostgres(is_synchronous=False)
    kafka = harness.MockKafka(partitions=PARTITIONS)
    try:
        pair.primary.query("CREATE DATABASE mesh")
        primary = Database(pair.primary, "mesh")
        standby = Database(pair.standby, "mesh")
        w = workers(kafka.bootstrap, pair.url("mesh"))
        harness.wait_for(lambda: "partitions assigned" in w.log_text(), 60,
                         "the worker to join its group")
        warnings = [json.loads(line) for line in w.log_text().splitlines()
                    if "replicates asynchronously" in line]
        assert len(warnings) == 1 and warnings[0]["standbys"] == 1, warnings

        # The schema reached the standby; then its replication stops.
        harness.wait_for(lambda: standby.query(
            "SELECT count(*) FROM pg_tables WHERE tablename = "
            "'requests'")[0][0] == 1, 60, "the schema on the standby")
        pair.standby.query("ALTER SYSTEM SET primary_conninfo = ''")
        pair.standby.query("SELECT pg_reload_conf()")
        harness.wait_for(lambda: not pair.primary.query(
            "SELECT 1 FROM pg_stat_replication"), 60,
            "the standby to stop streaming")

        lost = [request() for _ in range(LOST)]
        harness.produce_all(kafka.bootstrap, [
            (r["msp_id"].encode(), avro_codec.encode("CustomerRequested", r),
             []) for r in lost])
        harness.wait_for(lambda: primary.query(
            "SELECT count(*) FROM requests")[0][0] == LOST and
            committed_offsets(kafka.bootstrap) == LOST, 60,
            "the batches and their offsets to be committed")
        created = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                     lambda ms: len(ms) >= LOST, 60)

        pair.crash_primary()
        pair.promote()

        # The same worker goes on, on the new primary ...
        marker = request()
        harness.produce_all(kafka.bootstrap, [(
            marker["msp_id"].encode(),
            avro_codec.encode("CustomerRequested", marker), [])])
        harness.wait_for(lambda: standby.query(
            "SELECT count(*) FROM requests WHERE request_id = %s",
            marker["request_id"])[0][0] == 1, 120,
            "the worker to commit on the new primary")
        # ... and the committed batches are gone: Kafka holds their
        # offsets as consumed, customer.events announced the customers,
        # and the database has none of them.
        kept = standby.query("SELECT count(*) FROM requests WHERE "
                             "request_id = ANY(%s)",
                             [r["request_id"] for r in lost])[0][0]
        assert kept == 0
        assert standby.query("SELECT count(*) FROM customers")[0][0] == 1
        assert committed_offsets(kafka.bootstrap) == LOST + 1
        announced = {m["headers"]["request_id"].decode() for m in created}
        assert announced == {r["request_id"] for r in lost}
        print("\nasync replication: %d requests committed, their offsets "
              "committed and %d CustomerCreated published before the "
              "crash; after the promotion the database holds %d of them"
              % (LOST, len(created), kept))
        assert w.stop() == 0
    finally:
        kafka.destroy()
        pair.destroy()

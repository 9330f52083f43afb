#!/usr/bin/python3
"""Measures what each codec of MESH_WORKER_EVENTS_COMPRESSION costs and
saves, with real events: bytes in the broker's log (what travels on the
wire: Kafka stores the producer's record batches as they came) and the
producing process's CPU time.

    MW_BUILD_DIR=build bench/events_codec.py [-n 20000] [--rounds 3]

It starts a real broker (tests/kafka) and PostgreSQL, lets the worker
turn N requests into N events with no compression, then replays those
events' keys, values and headers with the relay's producer settings and
each codec: once in bursts, as the relay publishes a backlog, and once
one event a batch, as a quiet day publishes them.  CPU is the least of
--rounds runs, each replaying the events --repeat times, taken with
getrusage over the replay alone: the figures that matter are the
differences to "none".
"""

import argparse
import os
import random
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kafka"))

import broker  # noqa: E402
import harness  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

# A codec, or codec:level for librdkafka's compression.level.
CODECS = ["none", "gzip", "gzip:1", "snappy", "lz4", "zstd"]
RELAY = {"enable.idempotence": True, "acks": "all", "linger.ms": 0,
         "socket.nagle.disable": True, "message.timeout.ms": 0,
         "partitioner": "murmur2_random"}


def segment_batches(kafka, topic):
    """Returns (bytes, batches, records, codecs) of topic's log."""
    batches = kafka.log_batches(topic)
    return (sum(b[2] for b in batches), len(batches),
            sum(b[1] for b in batches), set(b[0] for b in batches))


def replay(bootstrap, topic, events, codec, one_a_batch):
    """Produces events to topic; returns the CPU seconds it took."""
    name, _, level = codec.partition(":")
    p = Producer(dict(RELAY, **{"bootstrap.servers": bootstrap,
                                "compression.codec": name,
                                "compression.level": int(level or -1)}))
    p.list_topics(topic, timeout=10)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for e in events:
        while True:
            try:
                p.produce(topic, key=e["key"], value=e["value"],
                          headers=list(e["headers"].items()))
                break
            except BufferError:
                p.poll(0.01)
        if one_a_batch:
            p.flush(30)
    assert p.flush(60) == 0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime +
                                                before.ru_stime)


def realistic_request(i):
    """A request whose names are not derived from its id, as a real
    customer's are not (the tests' requests repeat the id four times)."""
    name = "".join(random.choice("abcdefghijklmnopqrstuvwxyz")
                   for _ in range(random.randint(5, 14)))
    domain = "%s.%s" % (name, random.choice(["com", "de", "co.uk", "fr"]))
    return harness.request(
        msp_id="msp-%d" % (i % 50), msp_domain="msp%d.example" % (i % 50),
        company_name="%s %s" % (name.capitalize(),
                                random.choice(["Ltd", "GmbH", "Inc"])),
        primary_domain=domain, delivery_destination="mx.%s:25" % domain,
        default_admin_email="it@" + domain,
        licenses=random.randint(1, 5000))


def worker_cpu(worker):
    """CPU seconds the worker process has used."""
    with open("/proc/%d/stat" % worker.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_events(kafka, count):
    """Runs the worker on count requests; returns its events."""
    pg = harness.Postgres().start()
    worker = None
    try:
        url = "postgresql://postgres@127.0.0.1:%d/postgres" % pg.port
        worker = harness.Worker(kafka.bootstrap, url, env={
            "MESH_WORKER_EVENTS_COMPRESSION": "none"}).start()
        codec = harness.Avro()
        harness.produce_all(kafka.bootstrap, [
            (b"msp-%d" % (i % 50),
             codec.encode("CustomerRequested", realistic_request(i)), [
                 ("traceparent", ("00-%032x-%016x-01" % (i + 1, i + 1))
                  .encode())]) for i in range(count)])
        events = harness.read_topic(kafka.bootstrap, harness.TOPIC_EVENTS,
                                    lambda ms: len(ms) >= count, timeout=600)
        print("the worker used %.0f µs of CPU a request (PostgreSQL not "
              "counted)" % (worker_cpu(worker) * 1e6 / count))
        return events
    finally:
        if worker is not None:
            worker.stop()
            worker.destroy()
        pg.destroy()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3,
                        help="times the events are replayed in one run")
    parser.add_argument("--trickle", type=int, default=500,
                        help="events produced one a batch")
    args = parser.parse_args()
    with broker.Broker(partitions_default=8, topics={
            harness.TOPIC_REQUESTS: 8, harness.TOPIC_EVENTS: 8,
            harness.TOPIC_DLQ: 1}) as kafka:
        kafka.start()
        events = make_events(kafka, args.n)
        raw = sum(len(e["key"]) + len(e["value"]) +
                  sum(len(k) + len(v) for k, v in e["headers"].items())
                  for e in events)
        print("%d events; keys, values and headers: %.0f bytes an event"
              % (len(events), raw / len(events)))
        print("| codec | burst: bytes/event | events/batch | bytes/batch "
              "| CPU µs/event | one a batch: bytes/event |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        cpu = {codec: [] for codec in CODECS}
        for r in range(args.rounds):  # codecs take turns: noise spreads
            for codec in CODECS:
                topic = "burst-%s-%d" % (codec.replace(":", "-"), r)
                kafka.create_topic(topic, 8)
                cpu[codec].append(replay(kafka.bootstrap, topic,
                                         events * args.repeat, codec, False))
        for codec in CODECS:
            size, batches, records, seen = segment_batches(
                kafka, "burst-%s-0" % codec.replace(":", "-"))
            assert records == len(events) * args.repeat and \
                seen == {codec.partition(":")[0]}, (records, seen)
            topic = "trickle-" + codec.replace(":", "-")
            kafka.create_topic(topic, 8)
            replay(kafka.bootstrap, topic, events[:args.trickle], codec, True)
            time.sleep(1)
            t_size, _, t_records, _ = segment_batches(kafka, topic)
            assert t_records == args.trickle, t_records
            print("| %s | %.0f | %.0f | %.0f | %.1f | %.0f |" % (
                codec, size / records, records / batches, size / batches,
                min(cpu[codec]) * 1e6 / records, t_size / t_records))

if __name__ == "__main__":
    main()

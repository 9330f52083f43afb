"""Customer updates on a real Apache Kafka broker with two replicas: two
replicas racing to add one domain to two customers let exactly one win
and tell the other DOMAIN_ALREADY_PROVISIONED, and every customer's
events (creation, updates, a trial bought early, termination) keep their
order on customer.events.  One broker, one PostgreSQL and two workers
serve the file."""

import collections
import time
import uuid

import pytest

import harness
from harness import TOPIC_EVENTS, request, update_request

PAIRS = 60
CUSTOMERS = 100


@pytest.fixture(scope="module")
def replicas(request):
    harness.real_broker_module()
    import broker
    server = broker.Broker(partitions_default=8, topics={
        harness.TOPIC_REQUESTS: 8, TOPIC_EVENTS: 8, harness.TOPIC_DLQ: 1})
    pg = harness.Postgres()
    workers = []
    try:
        server.start()
        pg.start()
        env = {"MESH_WORKER_SCHEDULER_INTERVAL": "100ms"}
        workers = [harness.Worker(server.bootstrap, pg.url, env=env,
                                  name="r%d" % i).start() for i in range(2)]
        yield {"bootstrap": server.bootstrap, "pg": pg,
               "avro": harness.Avro(), "workers": workers}
    finally:
        for w in workers:
            if request.session.testsfailed:
                print("---- log of %s ----" % w.log_path)
                print("\n".join(w.log_text().splitlines()[-30:]))
            w.destroy()
        pg.destroy()
        server.destroy()


def produce(stack, records):
    harness.produce_all(stack["bootstrap"], [
        (datum["msp_id"].encode(), stack["avro"].encode(name, datum), [])
        for name, datum in records])


def read_events(stack, until, timeout=120):
    def decoded(messages):
        return [(stack["avro"].decode(m["value"]), m) for m in messages]

    return decoded(harness.read_topic(
        stack["bootstrap"], TOPIC_EVENTS, lambda ms: until(decoded(ms)),
        timeout=timeout))


def answered(stack, request_ids):
    """Waits until every request id has its outcome in the database."""
    harness.wait_for(
        lambda: stack["pg"].count(
            "SELECT count(*) FROM requests WHERE request_id = ANY(%s)",
            list(request_ids)) == len(request_ids),
        120, "%d requests to be answered" % len(request_ids))


def test_two_replicas_adding_one_domain_to_two_customers_let_one_win(
        replicas):
    creations = [request(msp_id="msp-%d" % i) for i in range(2 * PAIRS)]
    produce(replicas, [("CustomerRequested", d) for d in creations])
    answered(replicas, [d["request_id"] for d in creations])
    domains = ["race-%s.example" % uuid.uuid4().hex[:12]
               for _ in range(PAIRS)]
    updates = []
    for k, domain in enumerate(domains):
        for d in creations[2 * k:2 * k + 2]:
            updates.append(update_request(
                harness.customer_id(d["request_id"]), msp_id=d["msp_id"],
                add_domains=[domain]))
    produce(replicas, [("CustomerUpdateRequested", u) for u in updates])
    ids = {u["request_id"] for u in updates}
    events = read_events(replicas, lambda ev: sum(
        1 for (_, d), _ in ev if d.get("request_id") in ids) >= len(ids))
    won = collections.Counter()
    lost = collections.Counter()
    for (name, datum), msg in events:
        if datum.get("request_id") not in ids:
            continue
        if name == "CustomerUpdated":
            won[datum["additional_domains"][0]] += 1
        else:
            assert name == "CustomerRejected", name
            assert [(e["field"], e["code"]) for e in datum["errors"]] == [
                ("add_domains", "DOMAIN_ALREADY_PROVISIONED")], datum
            lost[datum["errors"][0]["message"]] += 1
    assert sorted(won) == sorted(domains), won
    assert set(won.values()) == {1}
    assert sum(lost.values()) == PAIRS
    assert replicas["pg"].count(
        "SELECT count(*) FROM customer_domains WHERE domain = ANY(%s) "
        "AND released_at IS NULL", domains) == PAIRS


def test_each_customers_events_keep_their_order_across_two_replicas(
        replicas):
    records, expected = [], {}
    for i in range(CUSTOMERS):
        msp = "msp-order-%d" % (i % 13)
        created = request(msp_id=msp, account_type="TRIAL")
        c = harness.customer_id(created["request_id"])
        records.append(("CustomerRequested", created))
        records += [("CustomerUpdateRequested",
                     update_request(c, msp_id=msp, licenses=30 + k,
                                    observed_at=1000 + k))
                    for k in range(3)]
        records.append(("CustomerUpdateRequested",
                        update_request(c, msp_id=msp,
                                       account_type="BUY_NOW")))
        records.append(("CustomerTerminationRequested", {
            "request_id": str(uuid.uuid4()),
            "requested_at": int(time.time() * 1000),
            "requested_by": "user@msp.example", "msp_id": msp,
            "customer_id": c, "effective_at": None}))
        expected[c.encode()] = (["CustomerCreated"] + ["CustomerUpdated"] * 4
                                + ["TrialConverted", "CustomerTerminated"])
    produce(replicas, records)

    def per_customer(events):
        seen = collections.defaultdict(list)
        for (name, datum), msg in events:
            if msg["key"] in expected:
                seen[msg["key"]].append((name, datum))
        return seen

    events = read_events(replicas, lambda ev: sum(
        len(v) for v in per_customer(ev).values()) >= 7 * CUSTOMERS)
    seen = per_customer(events)
    for key, want in expected.items():
        assert [n for n, _ in seen[key]] == want, (key, seen[key])
        licenses = [d["licenses"] for n, d in seen[key]
                    if n == "CustomerUpdated"]
        assert licenses == [30, 31, 32, 32], licenses

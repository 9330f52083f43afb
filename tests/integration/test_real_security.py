"""Kafka secured as in production, on one real broker for the module
(tests/kafka/broker.py, secured=True): SASL_SSL with SCRAM-SHA-512, mutual
TLS, and the StandardAuthorizer denying whatever no ACL allows.  The
worker's principal gets exactly the ACLs of the README's Security section,
read from the README itself.

* the pipeline provisions and publishes over SASL_SSL and over mutual TLS;
* without Write on the events topic the worker is not ready, says which
  topic and operation were denied, keeps every event in the outbox, and
  publishes them once the ACL is granted;
* a wrong password stops start-up with exit status 2 and a clear message,
  and the password appears nowhere in the output.

Each test has topics and a group of its own, so they share the broker.
"""

import os
import re
import time

import pytest

import harness
from harness import request
from test_operations import get, http_port

DEFAULT_NAMES = {"customer.requests": "requests", "customer.events": "events",
                 "customer.requests.dlq": "dlq", "mesh-worker": "group"}


def readme_acls():
    """The README's Kafka ACL table: (resource type, name, operation)."""
    with open(os.path.join(harness.SOURCE_DIR, "README.md")) as f:
        text = f.read()
    section = text.split("## Security", 1)[1].split("\n## ", 1)[0]
    section = section.split("### Kafka", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (Topic|Group|Cluster) \| `([^`]+)` \| (\w+) \|",
                      section, re.M)
    assert rows, "no ACL table in the README's Security section"
    return rows


def worker_acls(principal, names):
    """The README's ACLs for principal, with this test's names."""
    out = []
    for kind, name, operation in readme_acls():
        if kind != "Cluster":
            name = names[DEFAULT_NAMES[name]]
        out.append((kind, name, principal, operation))
    return out


@pytest.fixture(scope="module")
def secured():
    kafka_broker = harness.real_broker_module()
    server = kafka_broker.Broker(
        partitions_default=4, secured=True, tls_clients=("tls-worker",),
        scram_users=("worker", "limited-worker"))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def setup_names(secured, prefix):
    """Topics and a group of prefix; returns the worker's environment for
    them and the names."""
    names = {"requests": prefix + ".requests", "events": prefix + ".events",
             "dlq": prefix + ".requests.dlq", "group": prefix + "-group"}
    secured.create_topic(names["requests"], 4)
    secured.create_topic(names["events"], 4)
    secured.create_topic(names["dlq"], 1)
    env = {"MESH_WORKER_TOPIC_REQUESTS": names["requests"],
           "MESH_WORKER_TOPIC_EVENTS": names["events"],
           "MESH_WORKER_TOPIC_DLQ": names["dlq"],
           "MESH_WORKER_GROUP_ID": names["group"],
           "MESH_WORKER_HTTP_ADDR": "127.0.0.1:0"}
    return env, names


def kafka_env(properties):
    """librdkafka properties as MESH_WORKER_KAFKA_* variables."""
    return {"MESH_WORKER_KAFKA_" + k.upper().replace(".", "_"): v
            for k, v in properties.items()}


def publish_requests(secured, names, avro_codec, valid=30, invalid=5,
                     garbage=2):
    """Produces requests as the admin; returns (valid, invalid, garbage)."""
    good = [request(msp_id="msp-%d" % (i % 3)) for i in range(valid)]
    bad = [request(licenses=0) for _ in range(invalid)]
    junk = [b"\xc3\x01not avro %d" % i for i in range(garbage)]
    harness.produce_all(secured.bootstrap, [
        (r["msp_id"].encode(), avro_codec.encode("CustomerRequested", r), [])
        for r in good + bad] + [(b"junk", j, []) for j in junk],
        topic=names["requests"], conf=secured.client_config())
    return good, bad, junk


def read(secured, topic, count, timeout=120):
    return harness.read_topic(secured.bootstrap, topic,
                              lambda ms: len(ms) >= count, timeout=timeout,
                              conf=secured.client_config())


def check_pipeline(secured, db, worker, names, avro_codec):
    port = http_port(worker)
    harness.wait_for(lambda: get(port, "/readyz")[0] == 200, 60,
                     "readiness over the secured listener")
    good, bad, junk = publish_requests(secured, names, avro_codec)
    events = read(secured, names["events"], len(good) + len(bad))
    seen = {avro_codec.decode(m["value"])[1]["request_id"] for m in events}
    assert seen == {r["request_id"] for r in good + bad}
    dlq = read(secured, names["dlq"], len(junk))
    assert {m["value"] for m in dlq} == set(junk)
    assert db.query("SELECT count(*) FROM customers")[0][0] == len(good)
    assert get(port, "/readyz")[0] == 200
    assert worker.stop() == 0


def test_pipeline_over_sasl_ssl_with_scram(secured, db, workers, avro_codec,
                                           tmp_path):
    env, names = setup_names(secured, "sasl")
    secured.create_acls(worker_acls("User:worker", names))
    props = secured.credentials.librdkafka_scram("worker")
    password = props.pop("sasl.password")
    secret = tmp_path / "kafka-password"
    secret.write_text(password + "\n")
    env.update(kafka_env(props))
    env["MESH_WORKER_KAFKA_SASL_PASSWORD_FILE"] = str(secret)
    w = workers(secured.sasl_bootstrap, db.url, **env)
    check_pipeline(secured, db, w, names, avro_codec)
    assert password not in w.log_text()


def test_pipeline_over_mutual_tls(secured, db, workers, avro_codec):
    env, names = setup_names(secured, "mtls")
    secured.create_acls(worker_acls("User:tls-worker", names))
    env.update(kafka_env(secured.credentials.librdkafka_tls("tls-worker")))
    w = workers(secured.bootstrap, db.url, **env)
    check_pipeline(secured, db, w, names, avro_codec)


def test_missing_write_acl_keeps_events_until_granted(
        secured, db, workers, avro_codec):
    env, names = setup_names(secured, "denied")
    principal = "User:limited-worker"
    acls = worker_acls(principal, names)
    missing = ("Topic", names["events"], principal, "Write")
    assert missing in acls
    secured.create_acls([a for a in acls if a != missing])
    env.update(kafka_env(secured.credentials.librdkafka_scram(
        "limited-worker")))
    w = workers(secured.sasl_bootstrap, db.url, **env)
    port = http_port(w)
    good, bad, junk = publish_requests(secured, names, avro_codec)
    outcomes = len(good) + len(bad)

    # Consumed and committed; the outcomes wait in the outbox.
    harness.wait_for(lambda: db.query(
        "SELECT count(*) FROM requests")[0][0] == outcomes, 60,
        "every request to have an outcome")
    status, body = harness.wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/readyz")),
        60, "not ready while Write is denied")
    assert names["events"] in body and "Write" in body, body
    assert "TOPIC_AUTHORIZATION_FAILED" in body, body
    denials = [line for line in w.log_text().splitlines()
               if "Kafka denies this worker Write" in line]
    # Said once, not for every row and every retry.
    assert len(denials) == 1, denials
    assert '"topic":"%s"' % names["events"] in denials[0]
    assert '"operation":"Write"' in denials[0]
    # The dead letters' topic is allowed: only the events wait.
    assert len(read(secured, names["dlq"], len(junk))) == len(junk)
    time.sleep(3)
    assert db.query("SELECT count(*) FROM outbox WHERE stream = 0 AND "
                    "published_at IS NULL")[0][0] == outcomes
    assert get(port, "/readyz")[0] == 503

    granted = time.monotonic()
    secured.create_acls([missing])
    events = read(secured, names["events"], outcomes)
    delay = time.monotonic() - granted
    seen = {avro_codec.decode(m["value"])[1]["request_id"] for m in events}
    assert seen == {r["request_id"] for r in good + bad}
    assert len(events) == outcomes
    harness.wait_for(lambda: get(port, "/readyz")[0] == 200, 30,
                     "readiness once the ACL is granted")
    harness.wait_for(lambda: db.query(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0] == 0,
        30, "the outbox to be published")
    assert "Kafka accepts writes to the topic again" in w.log_text()
    print("\nevents published %.1f s after the ACL was granted" % delay)
    assert w.stop() == 0


def test_wrong_password_stops_start_up_without_showing_it(
        secured, db, workers):
    env, names = setup_names(secured, "wrongpw")
    secured.create_acls(worker_acls("User:worker", names))
    wrong = "Wrong-" + secured.credentials.passwords["worker"][::-1]
    env.update(kafka_env(secured.credentials.librdkafka_scram(
        "worker", password=wrong)))
    w = workers(secured.sasl_bootstrap, db.url, **env)
    started = time.monotonic()
    w.proc.wait(timeout=120)
    assert w.proc.returncode == 2
    text = w.log_text()
    print("\n" + "\n".join(line for line in text.splitlines()
                            if "refused" in line))
    assert "Kafka refused the worker's credentials" in text
    assert "MESH_WORKER_KAFKA_SASL_PASSWORD" in text
    assert wrong not in text
    assert secured.credentials.passwords["worker"] not in text
    print("\nwrong password: exit 2 after %.1f s" % (time.monotonic() - started))

"""Fixtures: real services per test module, removed even when tests fail."""

import os
import sys
import uuid

import pytest

import harness


@pytest.fixture(scope="module")
def pg():
    server = harness.Postgres().start()
    yield server
    server.destroy()


class Database:
    """A fresh database in the module's server."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        self.url = server.database_url(name)

    def query(self, sql, *params):
        import psycopg2
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


@pytest.fixture
def db(pg):
    name = "t_" + uuid.uuid4().hex[:12]
    pg.query("CREATE DATABASE " + name)
    yield Database(pg, name)


@pytest.fixture
def kafka():
    """A fresh Kafka per test: librdkafka's mock cluster, or with
    MW_KAFKA_TIER=real a real single-node KRaft broker (tests/kafka)."""
    if os.environ.get("MW_KAFKA_TIER") == "real":
        cluster = RealKafka()
    else:
        cluster = harness.MockKafka(partitions=8)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def real_kafka():
    """A fresh real single-node KRaft broker, whatever MW_KAFKA_TIER says."""
    cluster = RealKafka()
    try:
        yield cluster.server
    finally:
        cluster.destroy()


class RealKafka:
    """The real broker with the mock cluster's test interface."""

    def __init__(self):
        sys.path.insert(0, os.path.join(harness.SOURCE_DIR, "tests", "kafka"))
        import broker
        self.server = broker.Broker(partitions_default=8, topics={
            harness.TOPIC_REQUESTS: 8, harness.TOPIC_EVENTS: 8,
            harness.TOPIC_DLQ: 1})
        try:
            self.server.start()
        except BaseException:
            self.server.destroy()
            raise
        self.bootstrap = self.server.bootstrap

    def command(self, text):
        raise AssertionError("fault injection needs the mock cluster: %r"
                             % text)

    def destroy(self):
        self.server.destroy()


@pytest.fixture
def workers(request):
    """Starts workers on demand; on failure prints their logs' tails."""
    started = []

    def start(kafka_bootstrap, database_url, **env):
        w = harness.Worker(kafka_bootstrap, database_url, env=env,
                           name="w%d" % len(started)).start()
        started.append(w)
        return w

    yield start
    failed = getattr(request.node, "rep_call", None)
    for w in started:
        if failed is not None and failed.failed:
            print("---- log of %s (last 40 lines) ----" % w.log_path)
            print("\n".join(w.log_text().splitlines()[-40:]))
        w.destroy()


@pytest.fixture
def avro_codec():
    return harness.Avro()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)

"""PostgreSQL over TLS with a least-privilege login, as the README's
Security section sets it up: a server that accepts TLS only, with a
certificate from a CA made at test time; the schema migrated by its owner
(`mesh-worker migrate`); the worker logged in as a role that holds only
mesh_worker, verifying the server (sslmode=verify-full).  Kafka is
librdkafka's mock cluster."""

import os
import subprocess
import uuid

import psycopg2
import pytest

import harness
import pg_cluster
from conftest import Database
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

LOGIN = "mesh_app"
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def server():
    pg = pg_cluster.TlsPostgres()
    try:
        pg.start()
        pg.query("CREATE ROLE %s LOGIN PASSWORD '%s'" % (LOGIN, PASSWORD))
        yield pg
    finally:
        pg.destroy()


def run_cli(args, database_url, timeout=60):
    env = {"PATH": "/usr/bin:/bin", "MESH_WORKER_DATABASE_URL": database_url,
           "MESH_WORKER_DATABASE_WAIT": "5s", "MESH_WORKER_HTTP_ADDR": ""}
    return subprocess.run([harness.WORKER] + args, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


@pytest.fixture
def database(server):
    """A database migrated by its owner over TLS, with the login granted
    mesh_worker and nothing else, as the README says."""
    name = "t_" + uuid.uuid4().hex[:12]
    server.query("CREATE DATABASE " + name)
    result = run_cli(["migrate"], server.tls_url("postgres", name))
    assert result.returncode == 0, result.stdout
    owner_query(server, name, "REVOKE ALL ON DATABASE %s FROM PUBLIC; "
                "GRANT CONNECT ON DATABASE %s TO mesh_worker; "
                "GRANT mesh_worker TO %s" % (name, name, LOGIN))
    return name


def owner_query(server, name, sql, *params):
    return Database(server, name).query(sql, *params)


def worker_url(server, name, **kw):
    return server.tls_url(LOGIN, name, password=PASSWORD, **kw)


def test_worker_login_runs_pipeline_and_lifecycle_over_verified_tls(
        server, database, workers, avro_codec):
    kafka = harness.MockKafka(partitions=4)
    try:
        valid = request()
        invalid = request(licenses=0)
        trial = request(account_type="TRIAL")
        doomed = request(account_type="TRIAL")
        harness.produce_all(kafka.bootstrap, [
            (r["msp_id"].encode(), avro_codec.encode("CustomerRequested", r),
             [("traceparent", TRACEPARENT)])
            for r in (valid, invalid, trial, doomed)] + [
            (b"bad", b"\xc3\x01garbage", [])])
        # A trial of 3 s with a reminder 1 s before its end: both fire
        # while the test waits, on the same code path as 14 days.
        w = workers(kafka.bootstrap, worker_url(server, database),
                    MESH_WORKER_TRIAL_PERIOD="3s",
                    MESH_WORKER_TRIAL_REMINDER="1s",
                    MESH_WORKER_SCHEDULER_INTERVAL="100ms")
        harness.wait_for(lambda: owner_query(
            server, database, "SELECT count(*) FROM requests")[0][0] == 4,
            60, "four outcomes")
        termination = {
            "request_id": str(uuid.uuid4()), "requested_at": 1764000000000,
            "requested_by": "user@msp.example", "msp_id": doomed["msp_id"],
            "customer_id": harness.customer_id(doomed["request_id"]),
            "effective_at": None}
        # An update through every function and table an update writes.
        update = harness.update_request(
            harness.customer_id(valid["request_id"]), msp_id=valid["msp_id"],
            licenses=30, add_domains=["more-%s.example" % uuid.uuid4().hex],
            remove_domains=[])
        harness.produce_all(kafka.bootstrap, [(
            termination["msp_id"].encode(),
            avro_codec.encode("CustomerTerminationRequested", termination),
            []), (update["msp_id"].encode(),
                  avro_codec.encode("CustomerUpdateRequested", update), [])])

        wanted = {("CustomerCreated", valid["request_id"]),
                  ("CustomerRejected", invalid["request_id"]),
                  ("CustomerCreated", trial["request_id"]),
                  ("TrialEnding", trial["request_id"]),
                  ("TrialConverted", trial["request_id"]),
                  ("CustomerCreated", doomed["request_id"]),
                  ("CustomerTerminated", doomed["request_id"]),
                  ("CustomerUpdated", update["request_id"])}

        def seen(messages):
            out = set()
            for m in messages:
                name, datum = avro_codec.decode(m["value"])
                source = datum.get("request_id")
                if name in ("TrialEnding", "TrialConverted",
                            "CustomerTerminated"):
                    source = {harness.customer_id(r["request_id"]):
                              r["request_id"] for r in (trial, doomed)}[
                                  datum["customer_id"]]
                out.add((name, source))
            return out

        events = harness.read_topic(kafka.bootstrap, TOPIC_EVENTS,
                                    lambda ms: wanted <= seen(ms), 90)
        assert seen(events) == wanted
        # The termination came before the trial ended: never converted.
        assert owner_query(server, database,
                           "SELECT status, billable FROM customers WHERE "
                           "customer_id = %s", harness.customer_id(
                               doomed["request_id"])) == [
            ("TERMINATED", False)]
        dlq = harness.read_topic(kafka.bootstrap, TOPIC_DLQ,
                                 lambda ms: len(ms) >= 1, 30)
        assert [m["value"] for m in dlq] == [b"\xc3\x01garbage"]

        # Every session of the worker is the login, over TLS.
        sessions = owner_query(
            server, database,
            "SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN "
            "pg_stat_ssl s USING (pid) WHERE a.datname = %s AND "
            "a.backend_type = 'client backend' AND a.usename <> 'postgres'",
            database)
        assert len(sessions) >= 3, sessions
        assert set(sessions) == {(LOGIN, True)}
        assert w.stop() == 0
        assert PASSWORD not in w.log_text()
    finally:
        kafka.destroy()


STATEMENTS = [
    "CREATE TABLE intruder (id int)",
    "CREATE TEMP TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE INDEX intruder ON customers (company_name)",
    "CREATE VIEW intruder AS SELECT 1",
    "CREATE ROLE intruder",
    "CREATE DATABASE intruder",
    "ALTER TABLE customers ADD COLUMN intruder int",
    "ALTER TABLE outbox DISABLE TRIGGER ALL",
    "ALTER FUNCTION mw_ms_to_ts(bigint) RENAME TO intruder",
    "ALTER ROLE mesh_worker LOGIN",
    "DROP TABLE outbox",
    "DROP TABLE schema_migrations",
    "DROP FUNCTION mw_ms_to_ts(bigint)",
    "TRUNCATE customers CASCADE",
    "TRUNCATE outbox",
    "TRUNCATE timers",
    "INSERT INTO schema_migrations (version, name) VALUES (999, 'x')",
    "DELETE FROM schema_migrations",
]


def test_worker_login_cannot_create_alter_drop_or_truncate_anything(
        server, database):
    conn = psycopg2.connect(worker_url(server, database))
    conn.autocommit = True
    denied = []
    try:
        with conn.cursor() as cur:
            # What it needs, it has.
            cur.execute("SELECT count(*) FROM outbox")
            cur.execute("SELECT pg_has_role('mesh_worker', 'MEMBER')")
            assert cur.fetchone() == (True,)
            for sql in STATEMENTS:
                try:
                    cur.execute(sql)
                except psycopg2.errors.InsufficientPrivilege:
                    denied.append(sql)
    finally:
        conn.close()
    assert denied == STATEMENTS, set(STATEMENTS) - set(denied)
    assert owner_query(server, database,
                       "SELECT count(*) FROM pg_class WHERE relname = "
                       "'intruder'") == [(0,)]


def test_wrong_ca_stops_start_up_naming_the_variable(server, database):
    result = run_cli(["run"], worker_url(server, database,
                                         ca=server.certs.other_ca))
    assert result.returncode == 2, result.stdout
    assert ("PostgreSQL server certificate verification failed for "
            "MESH_WORKER_DATABASE_URL") in result.stdout
    assert "hint: Set sslrootcert=" in result.stdout
    assert PASSWORD not in result.stdout


def test_wrong_host_name_stops_start_up_naming_the_variable(server, database):
    url = worker_url(server, database, host="db.wrong.example",
                     hostaddr="127.0.0.1")
    result = run_cli(["run"], url)
    assert result.returncode == 2, result.stdout
    assert ("PostgreSQL server certificate does not match the host name in "
            "MESH_WORKER_DATABASE_URL") in result.stdout
    assert '"db.wrong.example"' in result.stdout
    assert "subjectAltName" in result.stdout
    assert PASSWORD not in result.stdout


def test_plain_connection_is_refused_by_the_server(server, database):
    result = run_cli(["run"], worker_url(server, database, sslmode="disable"))
    assert result.returncode == 1, result.stdout
    assert "no encryption" in result.stdout


def test_worker_login_waits_for_the_schema_then_says_so_or_starts(
        server, database, workers):
    owner_query(server, database,
                "DELETE FROM schema_migrations WHERE version = 5")
    # Alone, it gives up after MESH_WORKER_DATABASE_WAIT (5 s here).
    result = run_cli(["run"], worker_url(server, database))
    assert result.returncode == 1, result.stdout
    assert "database schema is not up to date; waiting for" in result.stdout
    assert "error: database schema is not up to date" in result.stdout
    assert ('1 migration not applied, the first "0005_set_based_timers.sql";'
            ' role "%s" may not apply them' % LOGIN) in result.stdout
    assert 'hint: Run "mesh-worker migrate"' in result.stdout
    # Nothing applied by the worker: every migration but the deleted one.
    migrations = [f for f in os.listdir(os.path.join(harness.SOURCE_DIR,
                                                     "migrations"))
                  if f.endswith(".sql")]
    assert owner_query(server, database,
                       "SELECT count(*) FROM schema_migrations") == [
                           (len(migrations) - 1,)]

    # Started alongside the owner's migrate, it waits, then starts.
    kafka = harness.MockKafka(partitions=1)
    try:
        w = workers(kafka.bootstrap, worker_url(server, database),
                    MESH_WORKER_DATABASE_WAIT="120s")
        harness.wait_for(lambda: "waiting for" in w.log_text(), 60,
                         "the worker to wait for the schema")
        assert "worker started" not in w.log_text()
        result = run_cli(["migrate"], server.tls_url("postgres", database))
        assert result.returncode == 0, result.stdout
        harness.wait_for(lambda: "worker started" in w.log_text(), 60,
                         "the worker to start")
        assert w.stop() == 0
    finally:
        kafka.destroy()
    assert owner_query(server, database,
                       "SELECT count(*) FROM schema_migrations") == [
                           (len(migrations),)]

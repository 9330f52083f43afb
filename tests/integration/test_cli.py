"""The command line: help, exit statuses, configuration errors that name
the variable, and `run` on the embedded defaults (mock cluster and a
private PostgreSQL) fed by `produce` and read back by `tail`."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import harness

WORKER = harness.WORKER
EXAMPLES = os.path.join(harness.SOURCE_DIR, "examples")


def run(args, env=None, input=None, timeout=60):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("MESH_WORKER_")}
    full.update(env or {})
    return subprocess.run([WORKER] + args, env=full, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["run", "migrate", "produce", "tail"])
def test_every_command_has_help(command):
    result = run([command, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mesh-worker " + command)


def test_top_level_help_lists_commands_and_variables():
    result = run(["--help"])
    assert result.returncode == 0
    for word in ("run", "migrate", "produce", "tail",
                 "MESH_WORKER_DATABASE_URL", "MESH_WORKER_TRIAL_PERIOD"):
        assert word in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run(["frobnicate"])
    assert result.returncode == 2
    assert "unknown command" in result.stderr


@pytest.mark.parametrize("variable,value", [
    ("MESH_WORKER_TRIAL_PERIOD", "14x"),
    ("MESH_WORKER_SHUTDOWN_TIMEOUT", "soon"),
    ("MESH_WORKER_LOG_LEVEL", "chatty"),
    ("MESH_WORKER_BATCH_SIZE", "0"),
    ("MESH_WORKER_TOPIC_EVENTS", "bad topic"),
    ("MESH_WORKER_HTTP_ADDR", "9464"),
    ("MESH_WORKER_KAFKA_NO_SUCH_PROPERTY", "1"),
])
def test_bad_configuration_stops_start_up_naming_the_variable(variable,
                                                              value):
    result = run(["run"], env={
        "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MESH_WORKER_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "MESH_WORKER_DATABASE_WAIT": "0",
        variable: value})
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert variable in result.stderr, result.stderr


def test_database_password_is_never_printed(pg):
    secret = "s3cr3t-pa55"
    result = run(["migrate"], env={
        "MESH_WORKER_DATABASE_URL":
            "postgresql://mesh:%s@127.0.0.1:1/none?connect_timeout=1" % secret,
        "MESH_WORKER_DATABASE_WAIT": "1s",
    }, timeout=120)
    assert result.returncode != 0
    assert secret not in result.stderr + result.stdout


def test_produce_rejects_input_that_is_not_a_request():
    env = {"MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    for text in ("{not json", '{"licences": 5}', '{"service": "MESH_MAGIC"}'):
        result = run(["produce"], env=env, input=text)
        assert result.returncode == 3, (text, result.stderr)
        assert result.stderr.strip()


def test_produce_and_tail_need_a_bootstrap_address():
    for command in ("produce", "tail"):
        result = run([command], input="{}")
        assert result.returncode == 2
        assert "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS" in result.stderr


@pytest.mark.parametrize("args,option", [
    (["tail", "--max", "12x"], "--max"),
    (["tail", "--max", "-1"], "--max"),
    (["tail", "--max", "99999999999999999999"], "--max"),
    (["dlq", "replay", "--max", ""], "--max"),
    (["dlq", "replay", "--from-offset", "-3"], "--from-offset"),
    (["dlq", "replay", "--from-offset", "7 "], "--from-offset"),
])
def test_a_number_option_that_is_not_a_number_is_a_usage_error(args, option):
    result = run(args, env={"MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS":
                            "127.0.0.1:1"}, timeout=10)
    assert result.returncode == 2, result.stderr
    assert "invalid " + option in result.stderr, result.stderr


def test_run_on_embedded_defaults_provisions_the_examples():
    """The quick start's path: no Kafka, no database configured."""
    data = tempfile.mkdtemp(prefix="mw-embedded-")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESH_WORKER_")}
    env.update({"MESH_WORKER_DATA_DIR": data, "MESH_WORKER_HTTP_ADDR": ""})
    worker = subprocess.Popen([WORKER, "run"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        line = worker.stdout.readline()
        match = re.match(r"bootstrap\.servers=(\S+)", line)
        assert match, line
        env["MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS"] = match.group(1)
        files = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".json"))
        produced = subprocess.run(
            [WORKER, "produce"] + [os.path.join(EXAMPLES, f) for f in files],
            env=env, capture_output=True, text=True, timeout=60)
        assert produced.returncode == 0, produced.stderr
        assert len(produced.stdout.splitlines()) == len(files)
        # One outcome an example, and the trial bought early also converts.
        expected = len(files) + 1
        tail = subprocess.run(
            [WORKER, "tail", "--follow", "--max", str(expected),
             "--timeout", "90s"],
            env=env, capture_output=True, text=True, timeout=120)
        assert tail.returncode == 0, tail.stderr
        events = [json.loads(l) for l in tail.stdout.splitlines()]
        kinds = {e["value"]["type"] for e in events}
        assert kinds == {"CustomerCreated", "CustomerRejected",
                         "CustomerUpdated", "TrialConverted",
                         "CustomerTerminated"}
        assert len(events) == expected
        # The private cluster lives under the data directory.
        assert os.path.exists(os.path.join(data, "postgresql", "PG_VERSION"))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        # Stopped with the worker: its socket is gone.
        assert not os.path.exists(os.path.join(data, "run", ".s.PGSQL.5432"))
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        subprocess.run(["/usr/lib/postgresql/%s/bin/pg_ctl" % sorted(
            os.listdir("/usr/lib/postgresql"), key=int)[-1], "-D",
            os.path.join(data, "postgresql"), "-m", "immediate", "stop"],
            capture_output=True,
            user="postgres" if os.geteuid() == 0 else None)
        shutil.rmtree(data, ignore_errors=True)


def test_dlq_replay_sends_messages_back_and_a_valid_one_is_provisioned(
        db, kafka, workers, avro_codec):
    r = harness.request()
    dlq_headers = lambda reason: [  # noqa: E731
        ("x-custom", b"kept"), ("dlq.reason", reason),
        ("dlq.original.topic", b"customer.requests"),
        ("dlq.original.partition", b"0"), ("dlq.original.offset", b"7")]
    harness.produce_all(kafka.bootstrap, [
        (b"msp-1", avro_codec.encode("CustomerRequested", r),
         dlq_headers(b"unknown-schema")),
        (b"junk", b"junk bytes", dlq_headers(b"bad-magic"))],
        topic=harness.TOPIC_DLQ)
    env = {"MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    listed = run(["dlq", "list"], env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 2
    dry = run(["dlq", "replay", "--dry-run"], env=env)
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) == 2
    workers(kafka.bootstrap, db.url)
    replayed = run(["dlq", "replay", "--reason", "unknown-schema"], env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert len(replayed.stdout.splitlines()) == 1
    events = harness.read_topic(kafka.bootstrap, harness.TOPIC_EVENTS,
                                lambda ms: len(ms) >= 1)
    name, datum = avro_codec.decode(events[0]["value"])
    assert (name, datum["request_id"]) == ("CustomerCreated", r["request_id"])
    requests = harness.read_topic(kafka.bootstrap, harness.TOPIC_REQUESTS,
                                  lambda ms: len(ms) >= 1)
    h = requests[0]["headers"]
    assert h["x-custom"] == b"kept"
    assert h["dlq.replayed.from"] == b"customer.requests.dlq:0:0"
    assert "dlq.reason" not in h


def _pg_ctl():
    version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    return "/usr/lib/postgresql/%s/bin/pg_ctl" % version


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user is used "
                    "only when the worker runs as root")
def test_embedded_data_dir_below_a_private_directory_works_as_root():
    """MESH_WORKER_DATA_DIR=$(mktemp -d)/data: the postgres user cannot
    enter the 0700 parent, so the cluster is kept in its home and linked."""
    parent = tempfile.mkdtemp(prefix="mw-private-")
    os.chmod(parent, 0o700)
    data = os.path.join(parent, "data")
    env = {"MESH_WORKER_DATA_DIR": data}
    cluster = None
    try:
        for attempt in ("initialise", "reuse"):
            result = run(["migrate"], env=env, timeout=120)
            assert result.returncode == 0, (attempt, result.stderr)
            assert "keeping the embedded PostgreSQL in its home" in \
                result.stderr, result.stderr
            assert '"blocked_by":"%s"' % parent in result.stderr
        link = os.path.join(data, "postgresql")
        assert os.path.islink(link)
        cluster = os.path.dirname(os.path.realpath(link))
        assert cluster.startswith(os.path.expanduser("~postgres") + "/")
        assert os.path.exists(os.path.join(link, "PG_VERSION"))
        # migrate stops the server it started: the socket is gone.
        assert not os.path.exists(os.path.join(cluster, "run",
                                               ".s.PGSQL.5432"))
    finally:
        if cluster is not None:
            subprocess.run([_pg_ctl(), "-D",
                            os.path.join(cluster, "postgresql"), "-m",
                            "immediate", "stop"], capture_output=True,
                           user="postgres")
            shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


def test_embedded_data_dir_that_cannot_be_made_stops_start_up():
    parent = tempfile.mkdtemp(prefix="mw-notdir-")
    blocker = os.path.join(parent, "file")
    open(blocker, "w").close()
    data = os.path.join(blocker, "data")
    try:
        result = run(["migrate"], env={"MESH_WORKER_DATA_DIR": data})
        assert result.returncode == 2, result.stderr
        assert 'could not create directory "%s"' % data in result.stderr
        assert "Not a directory" in result.stderr
        assert "MESH_WORKER_DATA_DIR" in result.stderr
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize("value", ["password=x://", "a" * 1100 + "://"])
def test_registry_url_typo_is_a_configuration_error_not_a_crash(value):
    result = run(["run"], env={
        "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MESH_WORKER_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "MESH_WORKER_SCHEMA_REGISTRY_URL": value})
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "MESH_WORKER_SCHEMA_REGISTRY_URL" in result.stderr
    assert "password=x" not in result.stderr

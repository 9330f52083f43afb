"""Test harness for the integration tests: real services, started and
stopped by the tests themselves.

* Postgres: a throwaway PostgreSQL cluster (initdb + pg_ctl from Debian's
  postgresql package) on a free port in its own temporary directory.
* MockKafka: librdkafka's mock cluster in its own process
  (tests/tools/mw_mock_cluster.c), so workers can die and restart while it
  lives on.
* Worker: a `mesh-worker run` process.
* Avro: an independent encoder/decoder written with Debian's python3-avro
  against the published schemas/, so the worker's codec is checked against
  another implementation of the same contract.

Everything cleans up after itself, also when a test fails.
"""

import datetime
import glob
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import avro.io
import avro.schema
from confluent_kafka import Consumer, Producer, TopicPartition

BUILD_DIR = os.environ.get("MW_BUILD_DIR", os.path.join(os.getcwd(), "build"))
SOURCE_DIR = os.environ.get(
    "MW_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
WORKER = os.path.join(BUILD_DIR, "mesh-worker")
MOCK_CLUSTER = os.path.join(BUILD_DIR, "tests", "mw_mock_cluster")

TOPIC_REQUESTS = "customer.requests"
TOPIC_EVENTS = "customer.events"
TOPIC_DLQ = "customer.requests.dlq"
EVENT_ID_NAMESPACE = uuid.UUID("5b0c3f1e-8d4a-4e7b-9c2f-6a1d7e4b8f30")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.2):
    """Polls predicate until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------- PostgreSQL

def _pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                  key=lambda p: int(p.split("/")[4]))
    if not dirs:
        raise RuntimeError("no PostgreSQL server: install Debian's postgresql")
    return os.path.dirname(dirs[-1])


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>.

    settings: extra server settings (name: value) given at start.
    initdb=False leaves the data directory empty (for pg_basebackup)."""

    def __init__(self, settings=None, initdb=True):
        self.bindir = _pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="mw-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = "postgresql://postgres@127.0.0.1:%d/postgres" % self.port
        self.settings = dict(settings or {})
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        if initdb:
            self._run("initdb", "-D", self.data, "--auth=trust",
                      "--username=postgres", "--encoding=UTF8",
                      "--no-locale", "--no-sync")

    def _run(self, program, *args, check=True):
        cmd = [os.path.join(self.bindir, program)] + list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        result = subprocess.run(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if check and result.returncode != 0:
            raise RuntimeError("%s failed: %s" % (program, result.stdout))
        return result

    def start(self):
        opts = ("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200" % (self.port, self.dir))
        for name, value in self.settings.items():
            opts += " -c %s=%s" % (name, value)
        self._run("pg_ctl", "-D", self.data, "-l",
                  os.path.join(self.dir, "log"), "-w", "-t", "60", "-o",
                  opts, "start")
        return self

    def database_url(self, name):
        """The owner's URL of database name on this server."""
        user, at, rest = self.url.partition("@")
        return user + at + rest.replace("/postgres", "/" + name, 1)

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop",
                  check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self):
        import psycopg2
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        return conn

    def count(self, sql, *params):
        """The first column of the first row of a count query, or 0 while
        the worker has not yet made the tables (its migrations run at
        start, after the test begins to poll)."""
        import psycopg2
        try:
            return self.query(sql, *params)[0][0]
        except psycopg2.errors.UndefinedTable:
            return 0

    def query(self, sql, *params):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


# --------------------------------------------------------------------- Kafka

class MockKafka:
    """librdkafka's mock cluster in a process of its own."""

    def __init__(self, partitions=8, brokers=1):
        self.proc = subprocess.Popen(
            [MOCK_CLUSTER, "-b", str(brokers), "-p", str(partitions),
             TOPIC_REQUESTS, TOPIC_EVENTS, TOPIC_DLQ + ":1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("bootstrap.servers="):
            self.proc.kill()
            raise RuntimeError("mock cluster did not start: %r" % line)
        self.bootstrap = line.split("=", 1)[1]

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", "mock cluster refused %r: %r" % (text, answer)

    def destroy(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def real_broker_module():
    """tests/kafka/broker.py, once java and the broker's jars are there.
    Without them the calling test module is skipped, unless
    MW_REQUIRE_REAL_KAFKA=1 makes that a failure."""
    import pytest
    path = os.path.join(SOURCE_DIR, "tests", "kafka")
    if path not in sys.path:
        sys.path.insert(0, path)
    import broker
    try:
        broker.java_binary()
        broker.ensure_jars()
    except broker.BrokerError as e:
        if os.environ.get("MW_REQUIRE_REAL_KAFKA") == "1":
            raise
        pytest.skip(str(e))
    return broker


def producer(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5,
            "partitioner": "murmur2_random", "enable.idempotence": True}
    conf.update(extra)
    return Producer(conf)


def produce_all(bootstrap, messages, topic=TOPIC_REQUESTS, conf=None):
    """Produces (key, value, headers[, partition]) tuples and waits for all.
    conf: more librdkafka properties (security, for one)."""
    p = producer(bootstrap, **dict(conf or {}))
    failures = []

    def report(err, msg):
        if err is not None:
            failures.append(err)

    for m in messages:
        key, value, headers = m[0], m[1], m[2]
        kwargs = {"key": key, "value": value, "headers": headers,
                  "on_delivery": report}
        if len(m) > 3 and m[3] is not None:
            kwargs["partition"] = m[3]
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    assert left == 0 and not failures, (left, failures[:3])


def read_topic(bootstrap, topic, until, timeout=120, conf=None):
    """Reads topic from the beginning until until(messages) is true.
    conf: more librdkafka properties (security, for one).

    Returns a list of dicts: partition, offset, timestamp (epoch ms),
    key, value, headers.
    """
    c = Consumer(dict({"bootstrap.servers": bootstrap,
                       "group.id": "mw-test-%s" % uuid.uuid4(),
                       "enable.auto.commit": False,
                       "enable.partition.eof": False}, **dict(conf or {})))
    md = c.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, 0)  # OFFSET_BEGINNING
             for p in md.topics[topic].partitions]
    for tp in parts:
        tp.offset = -2
    c.assign(parts)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(
                    "timed out after %d s reading %s: %d messages"
                    % (timeout, topic, len(out)))
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    continue
                out.append({"partition": m.partition(), "offset": m.offset(),
                            "timestamp": m.timestamp()[1],
                            "key": m.key(), "value": m.value(),
                            "headers": dict((k, v) for k, v in
                                            (m.headers() or []))})
    finally:
        c.close()
    return out


# ---------------------------------------------------------------------- Avro

def crc64_avro(data):
    """CRC-64-AVRO (Rabin) as the Avro specification defines it."""
    empty = 0xc15d213aa4d7a795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xff]
    return fp


def canonical_form(schema, namespace=None, named=None):
    """Parsing Canonical Form of a parsed schema JSON (Avro specification):
    full names, only the attributes that matter to parsing, no logical
    types, each named type written out once."""
    named = set() if named is None else named
    if isinstance(schema, str):
        if schema in ("null", "boolean", "int", "long", "float", "double",
                      "bytes", "string"):
            return json.dumps(schema)
        full = schema if "." in schema or not namespace else \
            namespace + "." + schema
        return json.dumps(full)
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(s, namespace, named)
                              for s in schema) + "]"
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else ns + "." + name
        if full in named:
            return json.dumps(full)
        named.add(full)
        inner_ns = full.rsplit(".", 1)[0] if "." in full else None
        parts = ['"name":' + json.dumps(full), '"type":' + json.dumps(kind)]
        if kind == "record":
            parts.append('"fields":[' + ",".join(
                '{"name":%s,"type":%s}' % (
                    json.dumps(f["name"]),
                    canonical_form(f["type"], inner_ns, named))
                for f in schema["fields"]) + "]")
        elif kind == "enum":
            parts.append('"symbols":' + json.dumps(
                schema["symbols"], separators=(",", ":")))
        else:
            parts.append('"size":%d' % schema["size"])
        return "{" + ",".join(parts) + "}"
    if kind == "array":
        return '{"type":"array","items":%s}' % canonical_form(
            schema["items"], namespace, named)
    if kind == "map":
        return '{"type":"map","values":%s}' % canonical_form(
            schema["values"], namespace, named)
    return canonical_form(kind, namespace, named)


class Avro:
    """Encodes and decodes with python3-avro and the published schemas."""

    def __init__(self):
        self.schemas = {}
        self.by_fingerprint = {}
        for name in ("CustomerRequested", "CustomerTerminationRequested",
                     "CustomerCreated", "CustomerRejected", "TrialEnding",
                     "TrialConverted", "CustomerTerminated",
                     "CustomerUpdateRequested", "CustomerUpdated"):
            with open(os.path.join(SOURCE_DIR, "schemas",
                                   name + ".avsc")) as f:
                text = f.read()
            schema = avro.schema.parse(text)
            fp = crc64_avro(canonical_form(json.loads(text)).encode())
            self.schemas[name] = (schema, fp)
            self.by_fingerprint[fp] = name

    def encode(self, name, datum):
        schema, fp = self.schemas[name]
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + fp.to_bytes(8, "little"))
        avro.io.DatumWriter(schema).write(_to_avro(schema, datum),
                                          avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def decode(self, data):
        """Returns (record name, datum with times as epoch ms)."""
        assert data[:2] == b"\xc3\x01", "not single-object encoded: %r" % data[:4]
        fp = int.from_bytes(data[2:10], "little")
        name = self.by_fingerprint.get(fp)
        assert name, "unknown fingerprint %x" % fp
        schema = self.schemas[name][0]
        datum = avro.io.DatumReader(schema).read(
            avro.io.BinaryDecoder(io.BytesIO(data[10:])))
        return name, _from_avro(datum)


def _to_avro(schema, datum):
    """Turns epoch-ms integers of timestamp fields into datetimes."""
    out = dict(datum)
    for field in schema.fields:
        value = out.get(field.name)
        text = json.dumps(field.type.to_json())
        if "timestamp-millis" in text and isinstance(value, int):
            out[field.name] = datetime.datetime.fromtimestamp(
                value / 1000, tz=datetime.timezone.utc)
    return out


def _from_avro(value):
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _from_avro(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_avro(v) for v in value]
    return value


def event_id(event_type, source_id):
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "%s:%s" % (event_type, source_id)))


def customer_id(request_id):
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "customer:%s" % request_id))


def request(**fields):
    """A valid CustomerRequested (MESH_GATEWAY, BUY_NOW) with overrides."""
    rid = fields.pop("request_id", None) or str(uuid.uuid4())
    # The whole id: 8 hex digits collide within 40,000 requests about one
    # run in six, and two requests for one domain rightly get one customer.
    tag = rid.replace("-", "")
    datum = {
        "request_id": rid,
        "requested_at": 1764000000000,
        "requested_by": "user@msp.example",
        "msp_id": "msp-1",
        "msp_domain": "msp.example",
        "mail_platform": "MICROSOFT_365",
        "service": "MESH_GATEWAY",
        "company_name": "Customer %s" % tag,
        "primary_domain": "c-%s.example.com" % tag,
        "additional_domains": [],
        "delivery_destination": "mail.c-%s.example.com:25" % tag,
        "licenses": 25,
        "default_admin_email": "admin@c-%s.example.com" % tag,
        "policy_template_id": None,
        "apply_global_rules": True,
        "msp_management": True,
        "two_factor_required": False,
        "monitor_mode": False,
        "account_type": "BUY_NOW",
    }
    datum.update(fields)
    return datum


def update_request(customer, **fields):
    """A CustomerUpdateRequested of customer by the MSP that changes
    nothing, with overrides (the fields to change)."""
    datum = {
        "request_id": str(uuid.uuid4()),
        "requested_at": int(time.time() * 1000),
        "requested_by": "user@msp.example",
        "msp_id": "msp-1",
        "customer_id": customer,
        "source": "MSP",
        "observed_at": int(time.time() * 1000),
        "licenses": None,
        "monitor_mode": None,
        "two_factor_required": None,
        "msp_management": None,
        "apply_global_rules": None,
        "delivery_destination": None,
        "policy_template_id": None,
        "add_domains": [],
        "remove_domains": [],
        "account_type": None,
    }
    datum.update(fields)
    return datum


# -------------------------------------------------------------------- Worker

class Worker:
    """A `mesh-worker run` process with its log in a file."""

    def __init__(self, kafka_bootstrap, database_url, env=None, name="w"):
        self.dir = tempfile.mkdtemp(prefix="mw-worker-")
        self.log_path = os.path.join(self.dir, name + ".log")
        self.env = dict(os.environ)
        self.env.update({
            "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "MESH_WORKER_DATABASE_URL": database_url,
            "MESH_WORKER_HTTP_ADDR": "",
            "MESH_WORKER_LOG_LEVEL": "info",
            "MESH_WORKER_DATA_DIR": self.dir,
            "MESH_WORKER_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "MESH_WORKER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "MESH_WORKER_KAFKA_LOG_LEVEL": "3",
        })
        self.env.update(env or {})
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([WORKER, "run"], env=self.env,
                                     stdout=self.log, stderr=self.log)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def destroy(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

#!/usr/bin/env python3
"""A real single-node Apache Kafka broker (KRaft, broker+controller in one
JVM) for the tests, run from the jars tests/kafka/pom.xml copies out of
Maven Central into tests/kafka/target/lib.

    with Broker(partitions_default=8) as kafka:
        kafka.create_topic("customer.requests", 8)
        ... kafka.bootstrap ...          # "127.0.0.1:PORT"
        kafka.restart()                  # SIGTERM, then start again
        kafka.kill(); kafka.start()      # SIGKILL, then start again
        kafka.pause(); kafka.resume()    # SIGSTOP, SIGCONT: a hung broker

Broker(secured=True, ...) adds TLS, SASL and ACLs; Cluster() runs three
nodes with replication factor 3 (see their comments).

Every broker lives in a fresh temporary directory (data, configuration and
logs) on free ports of 127.0.0.1; restart() and start() after stop()/kill()
reuse both, so data, committed offsets and producer state survive.  The
directory goes away in destroy(), on leaving the `with` block, and at
interpreter exit, also when a test fails; MW_KAFKA_KEEP=1 keeps it.

Standard library only.  Needs java (17+) on PATH or in JAVA_HOME and, the
first time, mvn with access to Maven Central; installs nothing itself.

CLI:  python3 tests/kafka/broker.py --topics customer.requests:8,customer.events:8
prints `bootstrap.servers=127.0.0.1:PORT` and runs until SIGTERM, SIGINT or
end of stdin.  Lines on stdin are commands, each answered `ok` (or
`error: ...`): restart, stop, kill, start, pause, resume, quit.
"""

import argparse
import atexit
import base64
import fcntl
import glob
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
POM = os.path.join(HERE, "pom.xml")
TARGET = os.path.join(HERE, "target")
LIB = os.path.join(TARGET, "lib")
STAMP = os.path.join(LIB, ".pom.sha256")

JVM_OPTS = ["-Xms64m", "-Xmx512m", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
            "-Djava.awt.headless=true"]
TOOL_JVM_OPTS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 "-XX:-UsePerfData", "-Xshare:auto"]


# The compression codec of a record batch, by its attributes' low bits.
BATCH_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


class BrokerError(RuntimeError):
    pass


def log(text):
    print("kafka: " + text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the jars

def java_binary():
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    java = shutil.which("java")
    if not java:
        raise BrokerError(
            "no java: the test broker needs a Java 17+ runtime on PATH "
            "(Debian: apt-get install openjdk-17-jre-headless)")
    return java


def _pom_digest():
    with open(POM, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _jars_ready(digest):
    try:
        with open(STAMP) as f:
            return f.read().strip() == digest and bool(
                glob.glob(os.path.join(LIB, "kafka_2.13-*.jar")))
    except OSError:
        return False


def ensure_jars():
    """Makes target/lib hold the jars of pom.xml; returns its path.

    A no-op when target/lib was made from the current pom.xml.  Otherwise
    runs Maven: offline first (everything may be in ~/.m2 already), then
    online.  A lock keeps parallel test processes from racing.
    """
    digest = _pom_digest()
    if _jars_ready(digest):
        return LIB
    os.makedirs(TARGET, exist_ok=True)
    with open(os.path.join(TARGET, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_ready(digest):
            return LIB
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                "no mvn: the test broker's jars come from Maven Central via "
                "%s (Debian: apt-get install maven), or put them in %s"
                % (POM, LIB))
        shutil.rmtree(LIB, ignore_errors=True)
        base = [mvn, "-q", "-B", "-f", POM, "package"]
        started = time.monotonic()
        result = subprocess.run(base[:1] + ["-o"] + base[1:],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        how = "from ~/.m2"
        if result.returncode != 0:
            log("fetching the broker's jars from Maven Central "
                "(the first time takes about half a minute)")
            shutil.rmtree(LIB, ignore_errors=True)
            result = subprocess.run(base, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            how = "from Maven Central"
        if result.returncode != 0:
            raise BrokerError("mvn failed to fetch the broker's jars:\n%s"
                              % result.stdout[-4000:])
        with open(STAMP, "w") as f:
            f.write(digest + "\n")
        log("jars %s into %s in %.1f s"
            % (how, LIB, time.monotonic() - started))
    return LIB


def kafka_version(lib=LIB):
    jars = glob.glob(os.path.join(lib, "kafka_2.13-*.jar"))
    if not jars:
        return None
    return os.path.basename(jars[0])[len("kafka_2.13-"):-len(".jar")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_cluster_id():
    """A Kafka Uuid as StorageTool random-uuid makes it: 22 base64url chars."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        if not text.startswith("-"):
            return text


def _die_with_parent():
    """In the child: SIGKILL when the Python process that started it dies
    (killed by a test runner's timeout, say), so no JVM is left behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ------------------------------------------------------- the Kafka protocol
#
# Just enough of it (non-flexible versions that Kafka 2.x to 4.x all serve)
# to see that the broker answers and to create topics without starting a
# JVM for each: Metadata v4 and CreateTopics v2.

class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        value = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value[0] if len(value) == 1 else value

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        text = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return text

    def array(self, item):
        n = self.take(">i")
        return [item() for _ in range(max(n, 0))]


def _string(text):
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def kafka_request(address, api_key, version, body, timeout=5.0, tls=None):
    """Sends one request and returns the response body (after the header).
    tls: an ssl.SSLContext for a TLS listener (mutual TLS when it holds a
    client certificate)."""
    correlation = 7
    header = struct.pack(">hhi", api_key, version, correlation) + \
        _string("mw-test-broker")
    with socket.create_connection(address, timeout=timeout) as raw:
        s = tls.wrap_socket(raw, server_hostname=address[0]) if tls else raw
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _recv_exactly(s, 4))[0]
        data = _recv_exactly(s, size)
    if struct.unpack_from(">i", data)[0] != correlation:
        raise BrokerError("bad correlation id in the broker's answer")
    return data[4:]


def _recv_exactly(s, n):
    chunks = []
    while n:
        chunk = s.recv(n)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def metadata(address, topics=(), timeout=5.0, tls=None):
    """Metadata v4: (brokers {id: (host, port)}, controller id,
    topics {name: (error, {partition: (error, leader, [in-sync ids])})})."""
    body = struct.pack(">i", len(topics)) + b"".join(
        _string(t) for t in topics) + b"\x00"
    r = _Reader(kafka_request(address, 3, 4, body, timeout, tls))
    r.take(">i")  # throttle_time_ms
    brokers = dict(r.array(lambda: (r.take(">i"), (r.string(), r.take(">i"),
                                                   r.string())[:2])))
    r.string()  # cluster_id
    controller = r.take(">i")

    def partition():
        error, index, leader = r.take(">hii")
        r.array(lambda: r.take(">i"))  # replicas
        isr = r.array(lambda: r.take(">i"))
        return index, (error, leader, isr)

    def topic():
        error = r.take(">h")
        name = r.string()
        r.take(">b")  # is_internal
        return name, (error, dict(r.array(partition)))

    return brokers, controller, dict(r.array(topic))


def create_topics(address, topics, timeout_ms=30000, tls=None, replicas=1):
    """CreateTopics v2 for {name: (partitions, {config: value})} with
    replicas copies of each partition; returns {name: (error code,
    message)}."""
    body = struct.pack(">i", len(topics))
    for name, (partitions, configs) in topics.items():
        body += _string(name) + struct.pack(">ihi", partitions, replicas, 0)
        body += struct.pack(">i", len(configs))
        for key, value in configs.items():
            body += _string(key) + _string(str(value))
    body += struct.pack(">ib", timeout_ms, 0)
    r = _Reader(kafka_request(address, 19, 2, body, timeout_ms / 1000 + 10,
                              tls))
    r.take(">i")  # throttle_time_ms
    return dict(r.array(lambda: (r.string(), (r.take(">h"), r.string()))))


def find_coordinator(address, group, tls=None, timeout=5.0):
    """FindCoordinator v1: the node id of the group's coordinator, or None
    while there is none (COORDINATOR_NOT_AVAILABLE and the like)."""
    body = _string(group) + b"\x00"  # key type 0: a group
    r = _Reader(kafka_request(address, 10, 1, body, timeout, tls))
    r.take(">i")  # throttle_time_ms
    error = r.take(">h")
    r.string()
    node = r.take(">i")
    return None if error else node


# ACL codes of the protocol (org.apache.kafka.common.acl and .resource).
RESOURCE_TYPES = {"Topic": 2, "Group": 3, "Cluster": 4, "TransactionalId": 5}
OPERATIONS = {"All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6,
              "Alter": 7, "Describe": 8, "ClusterAction": 9,
              "DescribeConfigs": 10, "AlterConfigs": 11,
              "IdempotentWrite": 12}
_LITERAL, _ALLOW = 3, 3


def _acl_fields(acl):
    """(resource type, name, principal, operation) as CreateAcls and
    DeleteAcls v1 write a literal ALLOW binding for any host."""
    kind, name, principal, operation = acl
    return (struct.pack(">b", RESOURCE_TYPES[kind]) + _string(name) +
            struct.pack(">b", _LITERAL) + _string(principal) + _string("*") +
            struct.pack(">bb", OPERATIONS[operation], _ALLOW))


def create_acls(address, acls, tls=None, timeout=10.0):
    """CreateAcls v1: allows each (resource type, resource name, principal,
    operation), e.g. ("Topic", "t", "User:worker", "Read"); the cluster's
    resource name is "kafka-cluster".  Raises BrokerError on a refusal."""
    body = struct.pack(">i", len(acls)) + b"".join(
        _acl_fields(a) for a in acls)
    r = _Reader(kafka_request(address, 30, 1, body, timeout, tls))
    r.take(">i")  # throttle_time_ms
    for acl, (error, message) in zip(acls, r.array(
            lambda: (r.take(">h"), r.string()))):
        if error:
            raise BrokerError("creating ACL %r: error %d %s"
                              % (acl, error, message))


def delete_acls(address, acls, tls=None, timeout=10.0):
    """DeleteAcls v1 for exactly these bindings; returns how many the
    broker removed."""
    body = struct.pack(">i", len(acls)) + b"".join(
        _acl_fields(a) for a in acls)
    r = _Reader(kafka_request(address, 31, 1, body, timeout, tls))
    r.take(">i")  # throttle_time_ms
    removed = 0

    def matching():
        r.take(">h")
        r.string()
        r.take(">b")
        r.string()
        r.take(">b")
        r.string()
        r.string()
        r.take(">bb")

    def result():
        error, message = r.take(">h"), r.string()
        if error:
            raise BrokerError("deleting ACLs: error %d %s" % (error, message))
        return len(r.array(matching))

    for count in r.array(result):
        removed += count
    return removed


# ---------------------------------------------------------------- security

def _openssl(directory, *args):
    openssl = shutil.which("openssl")
    if not openssl:
        raise BrokerError("no openssl: the secured broker makes its "
                          "certificates with it (Debian: apt-get install "
                          "openssl)")
    result = subprocess.run([openssl] + list(args), cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        raise BrokerError("openssl %s failed:\n%s" % (args[0], result.stdout))


class Credentials:
    """What a secured broker and its clients authenticate with, made at
    set-up in directory: a test CA (ca.pem), a certificate for the broker
    (CN=broker, for 127.0.0.1 and localhost) and one per client name
    (NAME.crt, NAME.key; CN=NAME), all P-256 keys, valid for a week; and a
    random SCRAM-SHA-512 password per user.  The broker maps a
    certificate's CN and a SCRAM user name alike to the principal
    User:NAME."""

    def __init__(self, directory, clients=("admin",), users=()):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = self.path("ca.pem")
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes"]
        _openssl(directory, "req", "-x509", *key, "-keyout", "ca.key",
                 "-out", "ca.pem", "-days", "7",
                 "-subj", "/CN=mesh-worker test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        for name in ("broker",) + tuple(clients):
            usage = "serverAuth,clientAuth" if name == "broker" \
                else "clientAuth"
            with open(self.path(name + ".ext"), "w") as f:
                f.write("basicConstraints=CA:FALSE\n"
                        "extendedKeyUsage=%s\n" % usage)
                if name == "broker":
                    f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            _openssl(directory, "req", "-new", *key, "-keyout", name + ".key",
                     "-out", name + ".csr", "-subj", "/CN=" + name)
            _openssl(directory, "x509", "-req", "-in", name + ".csr",
                     "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
                     str(int.from_bytes(os.urandom(8), "big")), "-days", "7",
                     "-extfile", name + ".ext", "-out", name + ".crt")
        # Kafka's PEM key store: the private key (PKCS#8), then the chain.
        with open(self.path("broker.keystore.pem"), "w") as out:
            for part in ("broker.key", "broker.crt", "ca.pem"):
                with open(self.path(part)) as f:
                    out.write(f.read())
        self.clients = tuple(clients)
        self.passwords = {user: base64.urlsafe_b64encode(
            os.urandom(18)).decode() for user in users}

    def path(self, name):
        return os.path.join(self.dir, name)

    def certificate(self, name):
        """(certificate file, key file) of a client."""
        return self.path(name + ".crt"), self.path(name + ".key")

    def tls_context(self, client="admin"):
        """An ssl.SSLContext that trusts the CA and presents the client's
        certificate (mutual TLS)."""
        import ssl
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(*self.certificate(client))
        return context

    def librdkafka_tls(self, client):
        """librdkafka properties for mutual TLS as client."""
        cert, key = self.certificate(client)
        return {"security.protocol": "SSL", "ssl.ca.location": self.ca,
                "ssl.certificate.location": cert, "ssl.key.location": key}

    def librdkafka_scram(self, user, password=None):
        """librdkafka properties for SASL_SSL with SCRAM-SHA-512 as user
        (with its password unless another is given)."""
        return {"security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user,
                "sasl.password": self.passwords[user]
                if password is None else password,
                "ssl.ca.location": self.ca}

    def broker_config(self):
        """server.properties entries common to every listener: TLS with
        the broker's certificate, CN-to-principal mapping, the
        StandardAuthorizer denying what no ACL allows."""
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.path("broker.keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.ca,
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "authorizer.class.name":
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": "User:broker;User:admin",
        }

    def format_args(self):
        """StorageTool format arguments that create the SCRAM users."""
        args = []
        for user, password in self.passwords.items():
            args += ["--add-scram", "SCRAM-SHA-512=[name=%s,password=%s]"
                     % (user, password)]
        return args


# ---------------------------------------------------------------- the broker

def _sweep_orphans():
    """Removes the directories of brokers whose Python process was killed
    (SIGKILL leaves no chance to clean up); kept ones have owner -1."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "mw-kafka-*")):
        try:
            with open(os.path.join(path, "owner.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue
        if pid <= 0:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


_LIVE = weakref.WeakSet()


@atexit.register
def _cleanup_at_exit():
    for broker in list(_LIVE):
        try:
            broker.destroy(timeout=5)
        except Exception:
            pass


class Broker:
    """One KRaft node (process.roles=broker,controller) on 127.0.0.1."""

    def __init__(self, partitions_default=1, topics=None,
                 log_segment_bytes=8 * 1024 * 1024, heap="512m",
                 start_timeout=120, extra_config=None, keep=None,
                 secured=False, tls_clients=(), scram_users=(),
                 node_id=1, quorum=None, cluster_id=None, replicas=1):
        """secured: listeners SSL (mutual TLS, also between the nodes),
        SASL_SSL (SCRAM-SHA-512) and an SSL controller listener, the
        StandardAuthorizer, and Credentials with a certificate for "admin"
        (a super user, which broker.py itself uses) and each of
        tls_clients, and a SCRAM user for each of scram_users.

        node_id, quorum ({node id: (port, controller port)}), cluster_id
        and replicas make this node one of a Cluster."""
        self.node_id = node_id
        self.quorum = quorum
        self.cluster_id = cluster_id
        self.replicas = replicas
        self.secured = secured
        self.tls_clients = tuple(tls_clients)
        self.scram_users = tuple(scram_users)
        self.credentials = None
        self.tls = None
        self.sasl_port = None
        self.partitions_default = partitions_default
        self.topics = dict(topics or {})  # name -> partitions, at start
        self.log_segment_bytes = log_segment_bytes
        self.heap = heap
        self.start_timeout = start_timeout
        self.extra_config = dict(extra_config or {})
        self.keep = (os.environ.get("MW_KAFKA_KEEP") == "1"
                     if keep is None else keep)
        self.dir = None
        self.port = None
        self.controller_port = None
        self.proc = None
        self.version = None
        self.start_seconds = None
        self._out = None

    # -- paths

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    @property
    def sasl_bootstrap(self):
        """The SASL_SSL listener of a secured broker."""
        return "127.0.0.1:%d" % self.sasl_port

    def client_config(self):
        """librdkafka properties of a client with every right: nothing on
        a plain broker, mutual TLS as admin on a secured one (with
        bootstrap, which is then the SSL listener)."""
        if not self.secured:
            return {}
        return self.credentials.librdkafka_tls("admin")

    @property
    def log_dir(self):
        return os.path.join(self.dir, "logs")

    @property
    def server_log(self):
        return os.path.join(self.log_dir, "server.log")

    @property
    def stdout_log(self):
        return os.path.join(self.log_dir, "kafka.out")

    def _path(self, name):
        return os.path.join(self.dir, name)

    # -- set-up, once per broker

    def _prepare(self):
        self.java = java_binary()
        ensure_jars()
        self.version = kafka_version()
        _sweep_orphans()
        self.dir = tempfile.mkdtemp(prefix="mw-kafka-")
        _LIVE.add(self)
        with open(self._path("owner.pid"), "w") as f:
            f.write("%d\n" % (-1 if self.keep else os.getpid()))
        os.makedirs(self.log_dir)
        if self.quorum:
            self.port, self.controller_port = self.quorum[self.node_id]
        else:
            self.port = free_port()
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        voters = ",".join("%d@127.0.0.1:%d" % (node, ports[1]) for node, ports
                          in sorted((self.quorum or {
                              self.node_id: (self.port,
                                             self.controller_port)}).items()))
        # A partition takes writes while min.insync.replicas copies of it
        # are in sync: two of three ride out one node's loss.
        in_sync = min(2, self.replicas)
        config = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": "PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d"
                         % (self.port, self.controller_port),
            "advertised.listeners": "PLAINTEXT://127.0.0.1:%d" % self.port,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self._path("data"),
            "num.partitions": self.partitions_default,
            "default.replication.factor": self.replicas,
            "min.insync.replicas": in_sync,
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": self.replicas,
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": self.replicas,
            "transaction.state.log.min.isr": in_sync,
            "transaction.state.log.num.partitions": 4,
            "group.initial.rebalance.delay.ms": 0,
            "log.segment.bytes": self.log_segment_bytes,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 4,
            # After a kill() the controller keeps the dead incarnation's
            # registration until its session expires (9 s by default) and
            # only then lets the restarted broker in: keep that short.
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
        }
        if self.secured:
            config.update(self._secured_config())
        config.update(self.extra_config)
        with open(self._path("server.properties"), "w") as f:
            for key, value in config.items():
                f.write("%s=%s\n" % (key, value))
        with open(self._path("log4j.properties"), "w") as f:
            f.write(
                "log4j.rootLogger=WARN, file\n"
                "log4j.appender.file=org.apache.log4j.FileAppender\n"
                "log4j.appender.file.File=%s\n"
                "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.file.layout.ConversionPattern="
                "[%%d] %%p %%m (%%c)%%n\n"
                # start-up and shutdown milestones
                "log4j.logger.kafka.server.KafkaRaftServer=INFO\n"
                "log4j.logger.kafka.Kafka=INFO\n"
                % self.server_log)
        self.cluster_id = self.cluster_id or random_cluster_id()
        self._java_tool("kafka.tools.StorageTool", "format", "-t",
                        self.cluster_id, "-c", self._path("server.properties"),
                        *(self.credentials.format_args()
                          if self.secured else ()))

    def _secured_config(self):
        """Listeners SSL (mutual TLS; between the nodes too), SASL_SSL
        (SCRAM-SHA-512, server certificate only) and CONTROLLER (mutual
        TLS), replacing the plain ones; self.port is the SSL listener."""
        self.credentials = Credentials(self._path("tls"),
                                       ("admin",) + self.tls_clients,
                                       self.scram_users)
        self.tls = self.credentials.tls_context("admin")
        self.sasl_port = free_port()
        config = self.credentials.broker_config()
        config.update({
            "listeners": "SSL://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d,"
                         "CONTROLLER://127.0.0.1:%d"
                         % (self.port, self.sasl_port, self.controller_port),
            "advertised.listeners": "SSL://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d"
                                    % (self.port, self.sasl_port),
            "listener.security.protocol.map":
                "SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SSL",
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.controller.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule "
                "required;",
        })
        return config

    # -- access control (a secured broker; broker.py acts as admin)

    def create_acls(self, acls):
        """Allows each (resource type, name, principal, operation); see
        create_acls().  The broker applies them within moments."""
        create_acls(self.address, list(acls), tls=self.tls)

    def delete_acls(self, acls):
        """Removes exactly these bindings; returns how many were found."""
        return delete_acls(self.address, list(acls), tls=self.tls)

    def _classpath(self):
        return os.path.join(LIB, "*")

    def _java_tool(self, main_class, *args, timeout=120):
        cmd = [self.java] + TOOL_JVM_OPTS + [
            "-Dlog4j.configuration=file:" + self._path("log4j.properties"),
            "-cp", self._classpath(), main_class] + list(args)
        result = subprocess.run(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise BrokerError("%s %s failed (%d):\n%s" % (
                main_class, " ".join(args), result.returncode,
                result.stdout[-4000:]))
        return result.stdout

    def kafka_tool(self, main_class, *args, timeout=120):
        """Runs one of Kafka's command-line tools against this broker, e.g.
        kafka_tool("org.apache.kafka.tools.TopicCommand", "--describe");
        --bootstrap-server is added.  Returns its output."""
        return self._java_tool(main_class, "--bootstrap-server",
                               self.bootstrap, *args, timeout=timeout)

    # -- life cycle

    def start(self):
        """Starts the broker (the first time: set up, format) and waits until
        it serves metadata with itself as the controller."""
        if self.running():
            return self
        started = time.monotonic()
        first = self.dir is None
        if first:
            self._prepare()
        self._launch()
        return self._finish_start(started, first)

    def _launch(self):
        """Starts the JVM; returns at once."""
        heap = ["-Xmx" + self.heap] if self.heap else []
        cmd = [self.java] + JVM_OPTS + heap + [
            "-Dlog4j.configuration=file:" + self._path("log4j.properties"),
            "-Dkafka.logs.dir=" + self.log_dir,
            "-cp", self._classpath(), "kafka.Kafka",
            self._path("server.properties")]
        self._out = open(self.stdout_log, "ab")
        # Own session: a terminal's ^C goes to Python, which stops the
        # broker in order.  PR_SET_PDEATHSIG fires when the *thread* that
        # started the child ends, so only the main thread asks for it.
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=self._out, start_new_session=True,
            preexec_fn=_die_with_parent if main else None)

    def _finish_start(self, started, first):
        """Waits until the node serves metadata, then (the first time)
        creates the topics; kills the node on failure."""
        try:
            self._wait_ready(started)
            if first and self.topics:
                for name, partitions in self.topics.items():
                    self.create_topic(name, partitions)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - started
        log("Kafka %s on %s %s in %.1f s (%s)" % (
            self.version, self.bootstrap,
            ("set up and started" if first else "restarted") + (
                " (node %d)" % self.node_id if self.quorum else ""),
            self.start_seconds, self.dir))
        return self

    def _wait_ready(self, started):
        deadline = started + self.start_timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise BrokerError("broker exited with %s during start-up:\n%s"
                                  % (self.proc.returncode, self.log_tail()))
            try:
                brokers, controller, _ = metadata(self.address, timeout=2,
                                                  tls=self.tls)
                if self.node_id in brokers:
                    return
                last = "metadata without the broker: %r" % (brokers,)
            except (OSError, struct.error, BrokerError) as e:
                last = e
            if time.monotonic() > deadline:
                raise BrokerError(
                    "broker not ready after %d s (last: %s):\n%s"
                    % (self.start_timeout, last, self.log_tail()))
            time.sleep(0.2)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM (a controlled shutdown), SIGKILL after timeout seconds.
        Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case it was paused
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log("broker ignored SIGTERM for %.0f s: SIGKILL" % timeout)
                self.proc.kill()
                self.proc.wait()
        self._close_out()
        return self.proc.returncode

    def kill(self):
        """SIGKILL: a crash, nothing flushed beyond what is in the files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_out()

    def pause(self):
        """SIGSTOP: a hung broker (long GC pause, frozen VM) that still holds
        its connections; requests pile up unanswered until resume()."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        if self.running():
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout=30):
        """stop() and start() on the same ports and data."""
        self.stop(timeout=timeout)
        return self.start()

    def destroy(self, timeout=30):
        """stop() and remove the temporary directory (unless kept)."""
        try:
            self.stop(timeout=timeout)
        finally:
            _LIVE.discard(self)
            if self.dir and not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
            elif self.dir:
                log("kept %s" % self.dir)

    def _close_out(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()

    # -- topics

    def create_topic(self, name, partitions=None, config=None, timeout=30):
        """Creates a topic (replicas copies of each partition) and waits
        until every partition has a leader."""
        partitions = partitions or self.partitions_default
        answer = create_topics(self.address,
                               {name: (partitions, dict(config or {}))},
                               tls=self.tls, replicas=self.replicas)
        error, message = answer.get(name, (-1, "no answer"))
        if error not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
            raise BrokerError("creating topic %s: error %d %s"
                              % (name, error, message))
        deadline = time.monotonic() + timeout
        while True:
            got = self.partitions(name)
            if got is not None and len(got) == partitions and all(
                    leader >= 0 for leader in got.values()):
                return
            if error == 36 and got is not None and len(got) != partitions:
                raise BrokerError("topic %s exists with %d partitions, not %d"
                                  % (name, len(got), partitions))
            if time.monotonic() > deadline:
                raise BrokerError("topic %s: partitions without leaders: %r"
                                  % (name, got))
            time.sleep(0.1)

    def partitions(self, name):
        """{partition: leader id} of a topic, None if it does not exist."""
        _, _, topics = metadata(self.address, [name], tls=self.tls)
        error, parts = topics.get(name, (3, {}))
        if error == 3:  # UNKNOWN_TOPIC_OR_PARTITION
            return None
        return {p: leader for p, (_, leader, _) in parts.items()}

    def in_sync(self, name):
        """{partition: [ids of the in-sync replicas]} of a topic."""
        _, _, topics = metadata(self.address, [name], tls=self.tls)
        return {p: isr for p, (_, _, isr) in topics[name][1].items()}

    def coordinator(self, group):
        """The node id of the group's coordinator, None while none."""
        return find_coordinator(self.address, group, tls=self.tls)

    # -- diagnostics

    def log_batches(self, topic):
        """The record batches (format v2) in topic's log segments on disk,
        as the producers sent them: a list of (codec, records, bytes), one
        per batch; codec is "none", "gzip", "snappy", "lz4" or "zstd"."""
        batches = []
        pattern = os.path.join(self._path("data"), glob.escape(topic) +
                               "-*", "*.log")
        for path in sorted(glob.glob(pattern)):
            with open(path, "rb") as f:
                data = f.read()
            pos = 0
            while pos + 61 <= len(data):
                # baseOffset int64, batchLength int32, ..., attributes
                # int16 at 21 (codec in bits 0-2), recordCount int32 at 57
                length = struct.unpack_from(">i", data, pos + 8)[0]
                attributes = struct.unpack_from(">h", data, pos + 21)[0]
                records = struct.unpack_from(">i", data, pos + 57)[0]
                batches.append((BATCH_CODECS.get(attributes & 7, "?"),
                                records, 12 + length))
                pos += 12 + length
        return batches

    def log_tail(self, lines=40):
        out = []
        for path in (self.stdout_log, self.server_log):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace").splitlines()
            except (OSError, TypeError):
                continue
            out.append("---- %s ----" % path)
            out.extend(text[-lines:])
        return "\n".join(out)


class Cluster:
    """Three KRaft nodes on 127.0.0.1, each a broker and a controller (a
    controller quorum of three), with replication factor 3,
    min.insync.replicas=2 and no unclean leader election: a cluster that
    loses no acknowledged write when one node dies.

        with Cluster(partitions_default=8, topics={"t": 8}) as kafka:
            kafka.bootstrap              # all three listeners
            kafka.leaders("t")           # {partition: node id}
            kafka.nodes[2].kill(); kafka.nodes[2].start()
            kafka.wait_in_sync(["t"])    # every replica back in sync

    Each node is a Broker with its own directory; they share the cluster
    id and one another's controller ports.
    """

    def __init__(self, size=3, partitions_default=1, topics=None,
                 heap="384m", topic_config=None, **options):
        ports, taken = {}, set()
        for node in range(1, size + 1):
            pair = []
            while len(pair) < 2:
                port = free_port()
                if port not in taken:
                    taken.add(port)
                    pair.append(port)
            ports[node] = tuple(pair)
        cluster_id = random_cluster_id()
        self.topics = dict(topics or {})
        self.topic_config = dict(topic_config or {})  # name -> {config}
        self.nodes = {node: Broker(
            partitions_default=partitions_default, heap=heap, node_id=node,
            quorum=ports, cluster_id=cluster_id, replicas=min(3, size),
            **options) for node in ports}

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def live(self):
        """A running node to ask (the lowest id)."""
        for node in self.nodes.values():
            if node.running():
                return node
        raise BrokerError("no node of the cluster is running")

    def start(self):
        """Sets up the nodes that never ran (their storage formats run in
        parallel), starts every stopped node, waits for all, then creates
        the topics the first time."""
        started = time.monotonic()
        fresh = [n for n in self.nodes.values() if n.dir is None]
        errors = []

        def prepare(node):
            try:
                node._prepare()
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=prepare, args=(n,))
                   for n in fresh]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        waiting = [n for n in self.nodes.values() if not n.running()]
        for node in waiting:
            node._launch()
        for node in waiting:
            node._finish_start(started, node in fresh)
        if fresh:
            for name, partitions in self.topics.items():
                self.live().create_topic(name, partitions,
                                         self.topic_config.get(name))
            self.wait_in_sync(self.topics)
        log("cluster of %d nodes ready in %.1f s: %s" % (
            len(self.nodes), time.monotonic() - started, self.bootstrap))
        return self

    def destroy(self, timeout=10):
        """Stops every node at once (one by one, the last would wait for a
        quorum that is gone), SIGKILL after timeout seconds; removes the
        directories."""
        for node in self.nodes.values():
            if node.running():
                node.proc.send_signal(signal.SIGCONT)
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            node.destroy(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()

    def leaders(self, topic):
        """{partition: leader node id} as a running node sees it."""
        return self.live().partitions(topic)

    def coordinator(self, group):
        """The group coordinator's node id, None while there is none."""
        return self.live().coordinator(group)

    def wait_in_sync(self, topics, timeout=120):
        """Waits until every partition of topics has a leader and all
        replicas of the cluster in sync (after a node came back)."""
        deadline = time.monotonic() + timeout
        want = min(3, len(self.nodes))
        while True:
            try:
                node = self.live()
                lagging = {t: {p: isr for p, isr in node.in_sync(t).items()
                               if len(isr) < want}
                           for t in topics}
                leaders = [node.partitions(t) for t in topics]
                if not any(lagging.values()) and all(
                        l >= 0 for ls in leaders for l in ls.values()):
                    return
            except (OSError, struct.error, BrokerError, KeyError) as e:
                lagging = e
            if time.monotonic() > deadline:
                raise BrokerError("replicas not in sync after %d s: %r"
                                  % (timeout, lagging))
            time.sleep(0.2)


# --------------------------------------------------------------------- CLI

def parse_topics(text, default):
    topics = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, count = item.partition(":")
        topics[name] = int(count) if count else default
    return topics


class _Quit(Exception):
    pass


def _quit(signum, frame):
    raise _Quit(signum)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Runs a single-node KRaft Kafka broker for tests.")
    parser.add_argument("--topics", default="",
                        help="name[:partitions],... to create at start")
    parser.add_argument("--partitions", type=int, default=1,
                        help="num.partitions for topics without a count")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (data and logs)")
    parser.add_argument("--ignore-stdin", action="store_true",
                        help="run until a signal even when stdin ends")
    args = parser.parse_args(argv)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _quit)
    broker = Broker(partitions_default=args.partitions,
                    topics=parse_topics(args.topics, args.partitions),
                    keep=args.keep or None)
    busy = threading.Lock()     # held while a command runs
    state = {"down": False, "died": False}

    def watch():
        """Ends the CLI when the broker dies without being asked to."""
        while True:
            time.sleep(0.5)
            if not busy.acquire(blocking=False):
                continue
            try:
                if not state["down"] and not broker.running():
                    state["died"] = True
                    log("broker died (exit status %s):\n%s"
                        % (broker.proc.returncode, broker.log_tail()))
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            finally:
                busy.release()

    try:
        broker.start()
        print("bootstrap.servers=%s" % broker.bootstrap, flush=True)
        threading.Thread(target=watch, daemon=True).start()
        if args.ignore_stdin:
            while True:
                signal.pause()
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if not command:
                continue
            try:
                with busy:
                    if command == "restart":
                        broker.restart()
                    elif command == "stop":
                        broker.stop()
                    elif command == "kill":
                        broker.kill()
                    elif command == "start":
                        broker.start()
                    elif command == "pause":
                        broker.pause()
                    elif command == "resume":
                        broker.resume()
                    else:
                        raise BrokerError("unknown command %r" % command)
                    if command != "pause" and command != "resume":
                        state["down"] = command in ("stop", "kill")
                print("ok", flush=True)
            except BrokerError as e:
                print("error: %s" % str(e).splitlines()[0], flush=True)
    except _Quit:
        pass
    except BrokerError as e:
        log(str(e))
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        broker.destroy()
    return 1 if state["died"] else 0


if __name__ == "__main__":
    sys.exit(main())

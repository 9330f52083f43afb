"""Schema Registry helpers for the integration tests: the test registry
(tests/registry/registry.py) as a process on a free port, its /_test/
failure injection and request counts, and Confluent framing written and
read with python3-avro, independently of the worker's codec."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import avro.io
import avro.schema

import harness

REGISTRY = os.path.join(harness.SOURCE_DIR, "tests", "registry",
                        "registry.py")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Registry:
    """A test registry process; destroy() stops it."""

    def __init__(self, *args, user=None, password=None):
        self.dir = tempfile.mkdtemp(prefix="mw-registry-")
        port_file = os.path.join(self.dir, "port")
        extra = list(args)
        if user is not None:
            extra += ["--user", user, "--password", password]
        self.auth = (user, password) if user is not None else None
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, REGISTRY, "--port", "0", "--port-file",
             port_file] + extra, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.destroy()
                raise RuntimeError("the test registry did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            self.port = int(f.read())
        self.url = "http://127.0.0.1:%d" % self.port

    def call(self, method, path, body=None):
        """(status, parsed answer); never raises on 4xx or 5xx."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", CONTENT_TYPE)
        if self.auth and not path.startswith("/_test/"):
            token = base64.b64encode(("%s:%s" % self.auth).encode())
            req.add_header("Authorization", "Basic " + token.decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def register(self, subject, schema):
        """Registers schema (text or JSON) under subject; returns its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        status, answer = self.call("POST", "/subjects/%s/versions" % subject,
                                   {"schema": text})
        assert status == 200, "could not register %s: %s" % (subject, answer)
        return answer["id"]

    def latest(self, subject):
        status, answer = self.call(
            "GET", "/subjects/%s/versions/latest" % subject)
        assert status == 200, answer
        return answer

    def schema(self, schema_id):
        status, answer = self.call("GET", "/schemas/ids/%d" % schema_id)
        assert status == 200, answer
        return answer["schema"]

    def fail(self, status=503, count=-1, path_prefix="/", method=None):
        """The next count matching requests answer status (-1: all)."""
        spec = {"status": status, "count": count, "path_prefix": path_prefix}
        if method:
            spec["method"] = method
        assert self.call("POST", "/_test/fail", spec)[0] == 200

    def reset(self):
        assert self.call("POST", "/_test/reset", {})[0] == 200

    def stats(self):
        return self.call("GET", "/_test/stats")[1]["requests"]

    def pause(self):
        """Stops answering at all (SIGSTOP): connections hang."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def destroy(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def schema_file(name):
    with open(os.path.join(harness.SOURCE_DIR, "schemas",
                           name + ".avsc")) as f:
        return f.read()


def request_schema(edit=None):
    """schemas/CustomerRequested.avsc as JSON, its fields list edited."""
    doc = json.loads(schema_file("CustomerRequested"))
    if edit:
        edit(doc["fields"])
    return doc


def _zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7f:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(schema, schema_id, datum, record="CustomerRequested"):
    """Confluent framing of datum written with schema (JSON text or doc):
    a record, or a union whose branch is chosen by the record's name."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    parsed = avro.schema.parse(text)
    prefix = b""
    if isinstance(parsed, avro.schema.UnionSchema):
        names = [s.name for s in parsed.schemas]
        prefix = _zigzag(names.index(record))
        parsed = parsed.schemas[names.index(record)]
    buf = io.BytesIO()
    avro.io.DatumWriter(parsed).write(harness._to_avro(parsed, datum),
                                      avro.io.BinaryEncoder(buf))
    return b"\x00" + schema_id.to_bytes(4, "big") + prefix + buf.getvalue()


def decode(schema_text, value):
    """(schema id, record name, datum) of a Confluent-framed value of a
    union schema."""
    assert value[:1] == b"\x00", "not Confluent-framed: %r" % value[:6]
    schema_id = int.from_bytes(value[1:5], "big")
    parsed = avro.schema.parse(schema_text)
    decoder = avro.io.BinaryDecoder(io.BytesIO(value[5:]))
    branch = parsed.schemas[decoder.read_long()]
    datum = avro.io.DatumReader(branch).read(decoder)
    return schema_id, branch.name, harness._from_avro(datum)

"""Tests of tests/registry/registry.py, the Schema Registry the other tests
run against: Confluent's answers, the compatibility rules, basic auth and
the /_test/ failure injection and request counts."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

REGISTRY = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "registry", "registry.py")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Server:
    """A registry process on a free port; stopped by stop()."""

    def __init__(self, tmp_path, *args):
        port_file = tmp_path / "registry.port"
        self.stderr_path = tmp_path / "registry.stderr"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, REGISTRY, "--port", "0",
                 "--port-file", str(port_file)] + list(args),
                stdout=subprocess.PIPE, stderr=stderr, text=True)
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("registry did not start: %s"
                            % self.stderr_path.read_text())
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        # Printed before the port file is written, so already there.
        self.banner = self.proc.stdout.readline().strip()
        self.auth = None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def call(self, method, path, body=None, auth=None,
             content_type=CONTENT_TYPE):
        """(status, parsed JSON answer, headers); never raises on 4xx/5xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.port, path), data=data,
            method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        auth = auth or self.auth
        if auth:
            token = base64.b64encode(("%s:%s" % auth).encode()).decode()
            request.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read()), \
                    response.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), e.headers

    def register(self, subject, schema, expect=200):
        text = schema if isinstance(schema, str) else json.dumps(schema)
        status, answer, _ = self.call(
            "POST", "/subjects/%s/versions" % subject, {"schema": text})
        assert status == expect, "expected %d, seen %d: %s" % (
            expect, status, answer)
        return answer

    def stats(self):
        return self.call("GET", "/_test/stats")[1]


@pytest.fixture
def registry(tmp_path):
    server = Server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def registry_with_auth(tmp_path):
    server = Server(tmp_path, "--user", "svc", "--password", "s3cret")
    yield server
    server.stop()


def record(*fields, name="Customer"):
    """A record in mesh.provisioning; fields are dicts or (name, type)."""
    return {"type": "record", "name": name, "namespace": "mesh.provisioning",
            "fields": [f if isinstance(f, dict) else
                       {"name": f[0], "type": f[1]} for f in fields]}


V1 = record(("id", "string"), ("licenses", "int"))


def test_startup_prints_the_address_it_listens_on(registry):
    assert registry.banner == "listening on http://127.0.0.1:%d" \
        % registry.port
    status, answer, headers = registry.call("GET", "/")
    assert (status, answer) == (200, {})
    assert headers["Content-Type"] == CONTENT_TYPE


def test_register_returns_an_id_and_the_schema_reads_back(registry):
    schema_id = registry.register("customer.requests-value", V1)["id"]
    assert isinstance(schema_id, int) and schema_id >= 1
    status, answer, _ = registry.call("GET", "/schemas/ids/%d" % schema_id)
    assert status == 200
    assert json.loads(answer["schema"]) == V1
    assert "schemaType" not in answer


def test_same_schema_written_differently_keeps_its_id(registry):
    first = registry.register("s-value", V1)["id"]
    reordered = json.dumps(dict(reversed(list(V1.items()))), indent=4)
    assert reordered != json.dumps(V1)
    assert registry.register("s-value", reordered)["id"] == first
    assert registry.call("GET", "/subjects/s-value/versions")[1] == [1]


def test_same_schema_under_two_subjects_has_one_id(registry):
    first = registry.register("a-value", V1)["id"]
    assert registry.register("b-value", V1)["id"] == first
    status, answer, _ = registry.call(
        "GET", "/schemas/ids/%d/versions" % first)
    assert status == 200
    assert answer == [{"subject": "a-value", "version": 1},
                      {"subject": "b-value", "version": 1}]
    assert registry.call("GET", "/subjects")[1] == ["a-value", "b-value"]


def test_versions_latest_and_numbered(registry):
    v2 = record(("id", "string"), ("licenses", "int"),
                {"name": "note", "type": ["null", "string"],
                 "default": None})
    id1 = registry.register("s-value", V1)["id"]
    id2 = registry.register("s-value", v2)["id"]
    assert id2 != id1
    assert registry.call("GET", "/subjects/s-value/versions")[1] == [1, 2]
    for version, schema_id, schema in (("1", id1, V1), ("2", id2, v2),
                                       ("latest", id2, v2)):
        status, answer, _ = registry.call(
            "GET", "/subjects/s-value/versions/" + version)
        assert status == 200
        assert (answer["subject"], answer["id"]) == ("s-value", schema_id)
        assert answer["version"] == (2 if version == "latest"
                                     else int(version))
        assert json.loads(answer["schema"]) == schema


def test_lookup_finds_a_registered_schema(registry):
    schema_id = registry.register("s-value", V1)["id"]
    status, answer, _ = registry.call(
        "POST", "/subjects/s-value", {"schema": json.dumps(V1, indent=2)})
    assert status == 200
    assert (answer["subject"], answer["version"], answer["id"]) == \
        ("s-value", 1, schema_id)
    status, answer, _ = registry.call(
        "POST", "/subjects/s-value",
        {"schema": json.dumps(record(("other", "int")))})
    assert (status, answer["error_code"]) == (404, 40403)
    status, answer, _ = registry.call(
        "POST", "/subjects/nobody", {"schema": json.dumps(V1)})
    assert (status, answer["error_code"]) == (404, 40401)


def test_unknown_id_subject_and_version_are_404(registry):
    assert registry.call("GET", "/schemas/ids/999")[:2] == \
        (404, {"error_code": 40403, "message": "Schema not found"})
    assert registry.call("GET", "/subjects/nobody/versions")[:2] == \
        (404, {"error_code": 40401, "message": "Subject 'nobody' not found."})
    assert registry.call("GET", "/subjects/nobody/versions/latest")[1][
        "error_code"] == 40401
    registry.register("s-value", V1)
    assert registry.call("GET", "/subjects/s-value/versions/2")[:2] == \
        (404, {"error_code": 40402, "message": "Version not found."})


@pytest.mark.parametrize("change, new", [
    ("optional field with a default",
     record(("id", "string"), ("licenses", "int"),
            {"name": "trial", "type": "boolean", "default": False})),
    ("int promoted to long", record(("id", "string"), ("licenses", "long"))),
    ("int promoted to double",
     record(("id", "string"), ("licenses", "double"))),
    ("string read as bytes", record(("id", "bytes"), ("licenses", "int"))),
    ("field removed", record(("id", "string"))),
    ("type widened to a union",
     record(("id", ["null", "string"]), ("licenses", "int"))),
])
def test_backward_compatible_change_is_registered(registry, change, new):
    first = registry.register("s-value", V1)["id"]
    second = registry.register("s-value", new)["id"]
    assert second != first, change
    assert registry.call("GET", "/subjects/s-value/versions")[1] == [1, 2]


@pytest.mark.parametrize("change, new", [
    ("new field without a default",
     record(("id", "string"), ("licenses", "int"), ("trial", "boolean"))),
    ("int changed to string",
     record(("id", "string"), ("licenses", "string"))),
    ("long narrowed to int", None),
    ("record renamed", record(("id", "string"), ("licenses", "int"),
                              name="Client")),
    ("type no longer in the union",
     record(("id", ["null", "int"]), ("licenses", "int"))),
])
def test_backward_incompatible_change_is_409(registry, change, new):
    old = V1
    if new is None:
        old = record(("id", "string"), ("licenses", "long"))
        new = V1
    registry.register("s-value", old)
    answer = registry.register("s-value", new, expect=409)
    assert answer["error_code"] == 409, change
    assert "incompatible" in answer["message"]
    assert registry.call("GET", "/subjects/s-value/versions")[1] == [1]


def test_enum_symbols_follow_the_resolution_rules(registry):
    def enum(symbols, **extra):
        return record({"name": "account_type", "type": dict(
            type="enum", name="AccountType", symbols=symbols, **extra)})
    registry.register("s-value", enum(["BUY_NOW", "TRIAL"]))
    registry.register("s-value", enum(["BUY_NOW", "TRIAL", "NFR"]))
    registry.register("s-value", enum(["BUY_NOW", "NFR"]), expect=409)
    registry.register("s-value", enum(["UNKNOWN", "BUY_NOW", "NFR"],
                                      default="UNKNOWN"))


def test_union_of_records_grows_but_keeps_its_branches(registry):
    created = record(("id", "string"), name="CustomerCreated")
    rejected = record(("id", "string"), name="CustomerRejected")
    ended = record(("id", "string"), name="TrialEnding")
    registry.register("customer.events-value", [created, rejected])
    registry.register("customer.events-value",
                      [created, rejected, ended])
    # Dropping a branch leaves data written with it unreadable.
    registry.register("customer.events-value", [created, ended],
                      expect=409)


def test_recursive_record_is_accepted_and_checked(registry):
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    registry.register("s-value", node)
    node["fields"][0]["type"] = "long"
    registry.register("s-value", node)


def test_none_compatibility_allows_any_change(registry):
    registry.register("s-value", V1)
    status, answer, _ = registry.call(
        "PUT", "/config/s-value", {"compatibility": "NONE"})
    assert (status, answer) == (200, {"compatibility": "NONE"})
    assert registry.call("GET", "/config/s-value")[1] == \
        {"compatibilityLevel": "NONE"}
    registry.register("s-value", record(("licenses", "string"),
                                        ("trial", "boolean")))
    # Other subjects keep the global level.
    assert registry.call("GET", "/config")[1] == \
        {"compatibilityLevel": "BACKWARD"}
    registry.register("t-value", V1)
    registry.register("t-value", record(("licenses", "string")), expect=409)


def test_global_config_applies_to_every_subject(registry):
    assert registry.call("PUT", "/config", {"compatibility": "full"})[:2] == \
        (200, {"compatibility": "FULL"})
    registry.register("s-value", V1)
    # Backward compatible, but old readers have no default for licenses.
    registry.register("s-value", record(("id", "string")), expect=409)
    registry.register("s-value", record(
        ("id", "string"),
        {"name": "licenses", "type": "int", "default": 1}))
    registry.register("s-value", record(("id", "string")))
    status, answer, _ = registry.call(
        "PUT", "/config", {"compatibility": "SOMETIMES"})
    assert (status, answer["error_code"]) == (422, 42203)


@pytest.mark.parametrize("text", [
    "{not json",
    '"no_such_type"',
    '{"type": "record", "name": "R"}',
    '{"type": "record", "name": "R", "fields": [{"name": "a"}]}',
    '{"type": "record", "name": "R", "fields": [{"name": "a", "type": '
    '["null", "string"], "default": "x"}]}',
    '{"type": "enum", "name": "E", "symbols": ["A", "A"]}',
    '["int", "int"]',
    '{"type": "fixed", "name": "F"}',
])
def test_invalid_schema_is_422(registry, text):
    answer = registry.register("s-value", text, expect=422)
    assert answer["error_code"] == 42201
    assert answer["message"].startswith("Invalid schema")
    assert registry.call("GET", "/subjects")[1] == []


def test_requests_accept_plain_json_and_refuse_other_types(registry):
    body = {"schema": json.dumps(V1)}
    status, _, _ = registry.call("POST", "/subjects/s-value/versions", body,
                                 content_type="application/json")
    assert status == 200
    status, answer, _ = registry.call("POST", "/subjects/s-value/versions",
                                      body, content_type="text/plain")
    assert (status, answer["error_code"]) == (415, 415)


def test_basic_auth_is_required_when_configured(registry_with_auth):
    server = registry_with_auth
    status, answer, headers = server.call("GET", "/subjects")
    assert (status, answer) == \
        (401, {"error_code": 401, "message": "Unauthorized"})
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert server.call("GET", "/subjects", auth=("svc", "wrong"))[0] == 401
    assert server.call("GET", "/subjects", auth=("other", "s3cret"))[0] == 401
    assert server.call("GET", "/subjects", auth=("svc", "s3cret"))[:2] == \
        (200, [])
    # The admin endpoints need no credentials.
    assert server.call("GET", "/_test/stats")[0] == 200


def test_injected_failure_answers_n_requests_then_recovers(registry):
    schema_id = registry.register("s-value", V1)["id"]
    path = "/schemas/ids/%d" % schema_id
    assert registry.call("POST", "/_test/fail", {
        "status": 503, "count": 2, "path_prefix": "/schemas/ids/"})[0] == 200
    assert registry.call("GET", "/subjects")[0] == 200   # does not match
    for _ in range(2):
        status, answer, _ = registry.call("GET", path)
        assert status == 503
        assert answer["error_code"] == 503 and answer["message"]
    assert registry.call("GET", path)[0] == 200


def test_injected_failure_without_end_lasts_until_reset(registry):
    registry.call("POST", "/_test/fail", {"status": 500, "count": -1})
    for _ in range(5):
        assert registry.call("GET", "/subjects")[0] == 500
    assert registry.call("GET", "/_test/stats")[0] == 200
    registry.call("POST", "/_test/reset")
    assert registry.call("GET", "/subjects")[0] == 200


def test_injected_delay_slows_the_next_requests(registry):
    registry.call("POST", "/_test/slow", {"delay_ms": 500, "count": 1})
    started = time.monotonic()
    assert registry.call("GET", "/subjects")[0] == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert registry.call("GET", "/subjects")[0] == 200
    assert time.monotonic() - started < 0.5


def test_stats_count_requests_by_route_and_reset(registry):
    schema_id = registry.register("s-value", V1)["id"]
    for _ in range(3):
        registry.call("GET", "/schemas/ids/%d" % schema_id)
    registry.call("GET", "/schemas/ids/12345")
    registry.call("GET", "/subjects/s-value/versions/latest")
    stats = registry.stats()
    assert stats["requests"] == {
        "POST /subjects/{subject}/versions": 1,
        "GET /schemas/ids/{id}": 4,
        "GET /subjects/{subject}/versions/{version}": 1,
    }
    assert stats["total"] == 6
    registry.call("POST", "/_test/stats/reset")
    assert registry.stats() == {"requests": {}, "total": 0}


def test_unknown_paths_and_methods(registry):
    assert registry.call("GET", "/nothing/here")[:2] == \
        (404, {"error_code": 404, "message": "HTTP 404 Not Found"})
    assert registry.call("PUT", "/subjects", {})[:2] == \
        (405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"})


def test_preload_registers_each_file_under_its_stem(tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "customer.requests-value.avsc").write_text(json.dumps(V1))
    (schemas / "copy-value.avsc").write_text(json.dumps(V1, indent=2))
    server = Server(tmp_path, "--preload", str(schemas))
    try:
        assert server.call("GET", "/subjects")[1] == \
            ["copy-value", "customer.requests-value"]
        answer = server.call(
            "GET", "/subjects/customer.requests-value/versions/1")[1]
        assert answer["id"] == 1 and json.loads(answer["schema"]) == V1
    finally:
        server.stop()

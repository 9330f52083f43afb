#!/usr/bin/env python3
"""A small Confluent-compatible Schema Registry for the tests.

It speaks the subset of Confluent's REST API that mesh-worker and the tests
use, with the same paths, bodies, status codes and error codes:

  GET  /                                        {}
  GET  /schemas/ids/{id}                        {"schema"}
  GET  /schemas/ids/{id}/versions               [{"subject", "version"}]
  GET  /subjects                                ["subject", ...]
  GET  /subjects/{subject}/versions             [1, 2, ...]
  GET  /subjects/{subject}/versions/{version}   {"subject", "version", "id",
                                                 "schema"}; version = N|latest
  POST /subjects/{subject}/versions             register: {"id"}
  POST /subjects/{subject}                      look up: as GET .../{version}
  GET|PUT /config, /config/{subject}            compatibility level

Ids are global: one schema (compared as canonical JSON) has one id in every
subject. Registering checks compatibility with the Avro schema resolution
rules (NONE, BACKWARD, FORWARD, FULL and their _TRANSITIVE forms).

For the tests only, under /_test/ (no auth, never failed on purpose):
  POST /_test/fail   {"status", "count", "path_prefix", "method"}  the next
                     `count` matching requests (-1: until reset) answer
                     `status` with a Confluent-style error body
  POST /_test/slow   {"delay_ms", "count", "path_prefix", "method"}
  POST /_test/reset  clear the injections
  GET  /_test/stats  {"requests": {"GET /schemas/ids/{id}": n, ...}, "total"}
  POST /_test/stats/reset
Requests are counted, then delayed or failed, then checked for credentials.

Not covered: schema references, Protobuf and JSON Schema, modes, contexts,
DELETE, aliases in compatibility checks, chunked request bodies. Logical
types are checked as their underlying types. Everything
is in memory and gone when the process ends.

    python3 registry.py --port 0 [--user U --password P] [--port-file F]
                        [--preload DIR] [--compatibility LEVEL]
"""

import argparse
import base64
import hmac
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_TYPES = ("application/vnd.schemaregistry.v1+json",
                  "application/vnd.schemaregistry+json", "application/json")
LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD",
          "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes",
              "string")
# Writer type -> reader types that read it (Avro spec, "Schema Resolution").
PROMOTIONS = {"int": ("long", "float", "double"), "long": ("float", "double"),
              "float": ("double",), "string": ("bytes",), "bytes": ("string",)}
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Error(Exception):
    """An answer other than 200: HTTP status, Confluent error code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message):
    return Error(422, 42201, "Invalid schema: " + message)


# ---- Avro schemas: parsing ------------------------------------------------
# A parsed schema is a dict with "kind" (a primitive name, "record", "enum",
# "fixed", "array", "map" or "union"). A name reference is the same dict as
# the definition, so recursive records are cyclic graphs.

def parse_schema(text):
    """Parses Avro schema JSON; returns (parsed, canonical text) or raises."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise invalid("not JSON: %s" % e)
    parsed = parse(doc, None, {})
    return parsed, json.dumps(doc, sort_keys=True, separators=(",", ":"))


def full_name(doc, namespace):
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("a named type has no name: %s" % json.dumps(doc))
    if "." not in name:
        space = doc.get("namespace", namespace)
        name = "%s.%s" % (space, name) if space else name
    if not all(NAME_RE.match(part) for part in name.split(".")):
        raise invalid("bad name %r" % name)
    return name


def parse(doc, namespace, names):
    if isinstance(doc, str):
        if doc in PRIMITIVES:
            return {"kind": doc}
        candidates = [doc] if "." in doc or not namespace else \
            ["%s.%s" % (namespace, doc), doc]
        for candidate in candidates:
            if candidate in names:
                return names[candidate]
        raise invalid("unknown type %r" % doc)
    if isinstance(doc, list):
        branches = [parse(d, namespace, names) for d in doc]
        keys = [union_key(b) for b in branches]
        if "union" in keys or len(set(keys)) != len(keys):
            raise invalid("a union holds a union or a type twice: %s"
                          % json.dumps(doc))
        return {"kind": "union", "branches": branches}
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise invalid("not a schema: %s" % json.dumps(doc))
    kind = doc["type"]
    if kind in PRIMITIVES:
        return {"kind": kind}          # logicalType does not change encoding
    if kind in ("array", "map"):
        part = "items" if kind == "array" else "values"
        if part not in doc:
            raise invalid("%s without %r" % (kind, part))
        return {"kind": kind, part: parse(doc[part], namespace, names)}
    if kind not in ("record", "error", "enum", "fixed"):
        raise invalid("unknown type %r" % kind)
    name = full_name(doc, namespace)
    if name in names or name in PRIMITIVES:
        raise invalid("%r is defined twice" % name)
    node = {"kind": "record" if kind == "error" else kind, "name": name}
    names[name] = node
    if kind == "fixed":
        if not isinstance(doc.get("size"), int) or doc["size"] < 0:
            raise invalid("fixed %r without a valid size" % name)
        node["size"] = doc["size"]
    elif kind == "enum":
        symbols = doc.get("symbols")
        if not isinstance(symbols, list) or len(set(symbols)) != len(symbols) \
                or not all(isinstance(s, str) and NAME_RE.match(s)
                           for s in symbols):
            raise invalid("enum %r needs unique symbols" % name)
        if "default" in doc and doc["default"] not in symbols:
            raise invalid("enum %r default is not a symbol" % name)
        node["symbols"], node["default"] = symbols, doc.get("default")
    else:
        parse_fields(doc, node, names)
    return node


def parse_fields(doc, node, names):
    fields = doc.get("fields")
    if not isinstance(fields, list):
        raise invalid("record %r without a fields list" % node["name"])
    node["fields"] = []
    space = node["name"].rpartition(".")[0] or None
    for f in fields:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) \
                or not NAME_RE.match(f["name"]) or "type" not in f:
            raise invalid("bad field in %r: %s"
                          % (node["name"], json.dumps(f)))
        if any(g["name"] == f["name"] for g in node["fields"]):
            raise invalid("field %r twice in %r" % (f["name"], node["name"]))
        ftype = parse(f["type"], space, names)
        if "default" in f and not default_fits(ftype, f["default"]):
            raise invalid("default of field %r does not match its type "
                          "(a union's default matches its first branch)"
                          % f["name"])
        node["fields"].append({"name": f["name"], "type": ftype,
                               "has_default": "default" in f})


def union_key(node):
    return node.get("name", node["kind"])


def default_fits(node, value):
    """True if value is a valid JSON default for the type (Avro spec)."""
    kind = node["kind"]
    if kind == "union":
        return default_fits(node["branches"][0], value)
    if kind in ("array", "map"):
        part, shape = ("items", list) if kind == "array" else ("values", dict)
        values = value.values() if isinstance(value, dict) else value
        return isinstance(value, shape) and all(
            default_fits(node[part], v) for v in values)
    if kind == "record":
        return isinstance(value, dict) and all(
            f["has_default"] or f["name"] in value for f in node["fields"])
    if kind == "enum":
        return value in node["symbols"]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"null": value is None, "boolean": isinstance(value, bool),
            "int": number and isinstance(value, int), "float": number,
            "long": number and isinstance(value, int), "double": number,
            }.get(kind, isinstance(value, str))


# ---- Avro schemas: resolution ---------------------------------------------

def cannot_read(reader, writer, assumed=None):
    """None if data written with writer can be read with reader, else why."""
    assumed = set() if assumed is None else assumed
    if (id(reader), id(writer)) in assumed:
        return None                    # a recursive record already in check
    assumed.add((id(reader), id(writer)))
    if writer["kind"] == "union":
        for branch in writer["branches"]:
            why = cannot_read(reader, branch, assumed)
            if why:
                return why
        return None
    if reader["kind"] == "union":
        if any(not cannot_read(b, writer, assumed.copy())
               for b in reader["branches"]):
            return None
        return "no branch of the reader's union reads %s" % describe(writer)
    if reader["kind"] != writer["kind"]:
        if reader["kind"] in PROMOTIONS.get(writer["kind"], ()):
            return None
        return "%s cannot read %s" % (describe(reader), describe(writer))
    if reader.get("name") != writer.get("name"):
        return "%s cannot read %s" % (describe(reader), describe(writer))
    kind = reader["kind"]
    if kind == "array":
        return cannot_read(reader["items"], writer["items"], assumed)
    if kind == "map":
        return cannot_read(reader["values"], writer["values"], assumed)
    if kind == "fixed" and reader["size"] != writer["size"]:
        return "fixed %s changed size" % reader["name"]
    if kind == "enum" and reader["default"] is None:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing:
            return "enum %s lacks symbols %s" % (reader["name"], missing)
    if kind == "record":
        return record_cannot_read(reader, writer, assumed)
    return None


def record_cannot_read(reader, writer, assumed):
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] not in written:
            if not field["has_default"]:
                return "field %s.%s is new and has no default" % (
                    reader["name"], field["name"])
            continue
        why = cannot_read(field["type"], written[field["name"]]["type"],
                          assumed)
        if why:
            return "field %s.%s: %s" % (reader["name"], field["name"], why)
    return None


def describe(node):
    return node.get("name", node["kind"])


def incompatibility(level, new, olds):
    """None if new may follow olds (oldest first) at level, else why."""
    if level == "NONE" or not olds:
        return None
    if not level.endswith("_TRANSITIVE"):
        olds = olds[-1:]
    for old in olds:
        if level.startswith(("BACKWARD", "FULL")):
            why = cannot_read(new, old)
            if why:
                return "new schema cannot read old data: " + why
        if level.startswith(("FORWARD", "FULL")):
            why = cannot_read(old, new)
            if why:
                return "old schema cannot read new data: " + why
    return None


# ---- The registry's state -------------------------------------------------

class Registry:
    """Schemas, subjects and config; every method takes the lock."""

    def __init__(self, compatibility="BACKWARD"):
        self.lock = threading.RLock()
        self.schemas = {}        # id -> {"text", "parsed"}
        self.ids = {}            # canonical text -> id
        self.subjects = {}       # subject -> [id of version 1, 2, ...]
        self.config = {None: compatibility}   # subject (None: global) -> level

    def register(self, subject, text):
        parsed, canonical = parse_schema(text)
        with self.lock:
            versions = self.subjects.get(subject, [])
            found = self.ids.get(canonical)
            if found in versions:
                return found
            level = self.config.get(subject, self.config[None])
            olds = [self.schemas[i]["parsed"] for i in versions]
            why = incompatibility(level, parsed, olds)
            if why:
                raise Error(409, 409, "Schema being registered is "
                            "incompatible with an earlier schema for subject "
                            "\"%s\", details: [%s]" % (subject, why))
            if found is None:
                found = len(self.schemas) + 1
                self.ids[canonical] = found
                self.schemas[found] = {"parsed": parsed, "text": json.dumps(
                    json.loads(text), separators=(",", ":"))}
            self.subjects.setdefault(subject, []).append(found)
            return found

    def lookup(self, subject, text):
        _, canonical = parse_schema(text)
        with self.lock:
            versions = self.versions(subject)
            found = self.ids.get(canonical)
            if found not in versions:
                raise Error(404, 40403, "Schema not found")
            return self.version(subject, str(versions.index(found) + 1))

    def schema(self, schema_id):
        with self.lock:
            entry = self.schemas.get(int(schema_id))
        if entry is None:
            raise Error(404, 40403, "Schema not found")
        return entry["text"]

    def uses(self, schema_id):
        """[{"subject", "version"}] of every version with that schema id."""
        self.schema(schema_id)
        with self.lock:
            return [{"subject": subject, "version": n + 1}
                    for subject, ids in sorted(self.subjects.items())
                    for n, i in enumerate(ids) if i == int(schema_id)]

    def subject_names(self):
        with self.lock:
            return sorted(self.subjects)

    def versions(self, subject):
        with self.lock:
            if subject not in self.subjects:
                raise Error(404, 40401, "Subject '%s' not found." % subject)
            return list(self.subjects[subject])

    def version(self, subject, version):
        versions = self.versions(subject)
        if version in ("latest", "-1"):
            number = len(versions)
        elif version.isdigit() and int(version) > 0:
            number = int(version)
        else:
            raise Error(422, 42202, "The specified version '%s' is not a "
                        "valid version id." % version)
        if number > len(versions):
            raise Error(404, 40402, "Version not found.")
        schema_id = versions[number - 1]
        return {"subject": subject, "version": number, "id": schema_id,
                "schema": self.schema(schema_id)}

    def set_config(self, subject, body):
        level = str(body.get("compatibility", "")).upper()
        if level not in LEVELS:
            raise Error(422, 42203, "Invalid compatibility level. Valid "
                        "values are %s" % ", ".join(LEVELS))
        with self.lock:
            self.config[subject] = level
        return {"compatibility": level}

    def get_config(self, subject, default_to_global):
        with self.lock:
            level = self.config.get(subject)
            if level is None and (subject is None or default_to_global):
                level = self.config[None]
        if level is None:
            raise Error(404, 40408, "Subject '%s' does not have subject-level "
                        "compatibility configured" % subject)
        # GET answers compatibilityLevel, as Confluent does; PUT compatibility.
        return {"compatibilityLevel": level}


# ---- HTTP -----------------------------------------------------------------

def routes(reg):
    """[(method, path pattern, route template, handler)]; a handler takes
    the path's parameters (unquoted), the JSON body and the query."""
    seg = r"([^/]+)"
    table = [
        ("GET", r"", "/", lambda a, b, q: {}),
        ("GET", r"/schemas/ids/(\d+)", "/schemas/ids/{id}",
         lambda a, b, q: {"schema": reg.schema(a[0])}),
        ("GET", r"/schemas/ids/(\d+)/versions", "/schemas/ids/{id}/versions",
         lambda a, b, q: reg.uses(a[0])),
        ("GET", r"/subjects", "/subjects",
         lambda a, b, q: reg.subject_names()),
        ("GET", r"/subjects/%s/versions" % seg, "/subjects/{subject}/versions",
         lambda a, b, q: list(range(1, len(reg.versions(a[0])) + 1))),
        ("GET", r"/subjects/%s/versions/%s" % (seg, seg),
         "/subjects/{subject}/versions/{version}",
         lambda a, b, q: reg.version(a[0], a[1])),
        ("POST", r"/subjects/%s/versions" % seg,
         "/subjects/{subject}/versions",
         lambda a, b, q: {"id": reg.register(a[0], schema_text(b))}),
        ("POST", r"/subjects/%s" % seg, "/subjects/{subject}",
         lambda a, b, q: reg.lookup(a[0], schema_text(b))),
        ("GET", r"/config", "/config",
         lambda a, b, q: reg.get_config(None, True)),
        ("PUT", r"/config", "/config",
         lambda a, b, q: reg.set_config(None, b)),
        ("GET", r"/config/%s" % seg, "/config/{subject}",
         lambda a, b, q: reg.get_config(
             a[0], q.get("defaultToGlobal") == ["true"])),
        ("PUT", r"/config/%s" % seg, "/config/{subject}",
         lambda a, b, q: reg.set_config(a[0], b)),
    ]
    return [(method, re.compile(pattern + r"/?\Z"), template, handler)
            for method, pattern, template, handler in table]


def schema_text(body):
    if body.get("schemaType", "AVRO") != "AVRO" or body.get("references"):
        raise Error(422, 42201, "Invalid schema: only AVRO without references "
                    "is supported here")
    if not isinstance(body.get("schema"), str) or not body["schema"]:
        raise Error(422, 42201, "Empty schema")
    return body["schema"]


class Harness:
    """Injected failures and delays, and request counts by route."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()
        self.stats = {}

    def reset(self):
        with self.lock:
            self.injections = []      # [kind, spec dict, remaining count]

    def add(self, kind, spec):
        with self.lock:
            self.injections.append([kind, spec, int(spec.get("count", 1))])

    def take(self, kind, method, path):
        """The spec of the first live injection of kind matching, or None."""
        with self.lock:
            for entry in self.injections:
                spec = entry[1]
                if entry[0] == kind and entry[2] != 0 \
                        and path.startswith(spec.get("path_prefix", "/")) \
                        and spec.get("method", method) == method:
                    if entry[2] > 0:
                        entry[2] -= 1
                    return spec
        return None

    def count(self, route):
        with self.lock:
            self.stats[route] = self.stats.get(route, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mw-test-registry"

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if url.path.startswith("/_test/"):
                status, answer = 200, self.admin(method, url.path, raw)
            else:
                status, answer = self.serve(method, url, raw)
        except Error as e:
            status, answer = e.status, {"error_code": e.code,
                                        "message": e.message}
        except Exception as e:         # a bug here: say so, keep serving
            self.log_error("internal error: %r", e)
            status, answer = 500, {"error_code": 50001,
                                   "message": "Internal error: %r" % e}
        self.reply(status, answer)

    def serve(self, method, url, raw):
        app = self.server.app
        path = url.path.rstrip("/")
        allowed = []
        for route_method, pattern, template, handler in app["routes"]:
            match = pattern.match(path)
            if match and route_method == method:
                break
            if match:
                allowed.append(route_method)
        else:
            app["harness"].count("%s <no route>" % method)
            if allowed:
                raise Error(405, 405, "HTTP 405 Method Not Allowed")
            raise Error(404, 404, "HTTP 404 Not Found")
        app["harness"].count("%s %s" % (method, template))
        self.inject(method, url.path)
        self.check_auth()
        params = [urllib.parse.unquote(g) for g in match.groups()]
        body = self.json_body(raw) if method in ("POST", "PUT") else {}
        query = urllib.parse.parse_qs(url.query)
        return 200, handler(params, body, query)

    def inject(self, method, path):
        harness = self.server.app["harness"]
        slow = harness.take("slow", method, path)
        if slow:
            time.sleep(int(slow.get("delay_ms", 1000)) / 1000.0)
        fail = harness.take("fail", method, path)
        if fail:
            status = int(fail.get("status", 503))
            raise Error(status, int(fail.get("error_code", status)),
                        fail.get("message", "Injected failure"))

    def check_auth(self):
        expected = self.server.app["credentials"]
        if expected is None:
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Basic "):
            raise Error(401, 401, "Unauthorized")
        try:
            decoded = base64.b64decode(given[6:], validate=True)
        except ValueError:
            raise Error(401, 401, "Unauthorized")
        if not hmac.compare_digest(decoded, expected):
            raise Error(401, 401, "Unauthorized")

    def json_body(self, raw):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype and ctype.lower() not in ACCEPTED_TYPES:
            raise Error(415, 415, "HTTP 415 Unsupported Media Type")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise Error(400, 400, "Unrecognized JSON: %s" % e)
        if not isinstance(body, dict):
            raise Error(422, 422, "Unprocessable entity: a JSON object needed")
        return body

    def admin(self, method, path, raw):
        harness = self.server.app["harness"]
        try:
            body = json.loads(raw) if raw.strip() else {}
            int(body.get("count", 1)), int(body.get("delay_ms", 0))
        except (ValueError, TypeError, AttributeError) as e:
            raise Error(400, 400, "bad admin request: %r" % e)
        if method == "POST" and path in ("/_test/fail", "/_test/slow"):
            harness.add(path[len("/_test/"):], body)
        elif method == "POST" and path == "/_test/reset":
            harness.reset()
        elif method == "GET" and path == "/_test/stats":
            with harness.lock:
                return {"requests": dict(harness.stats),
                        "total": sum(harness.stats.values())}
        elif method == "POST" and path == "/_test/stats/reset":
            with harness.lock:
                harness.stats.clear()
        else:
            raise Error(404, 404, "no such admin endpoint")
        return {}

    def reply(self, status, answer):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate",
                             'Basic realm="SchemaRegistry"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.server.app["verbose"]:
            sys.stderr.write("registry: %s\n" % (fmt % args))


def preload(reg, directory):
    for name in sorted(os.listdir(directory)):
        if name.endswith(".avsc"):
            with open(os.path.join(directory, name)) as f:
                try:
                    reg.register(name[:-len(".avsc")], f.read())
                except Error as e:
                    sys.exit("registry: could not preload %s: %s"
                             % (name, e.message))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--port-file")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--preload", metavar="DIR")
    parser.add_argument("--compatibility", default="BACKWARD",
                        type=str.upper, choices=LEVELS)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")

    reg = Registry(args.compatibility)
    if args.preload:
        preload(reg, args.preload)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.app = {
        "routes": routes(reg), "harness": Harness(), "verbose": args.verbose,
        "credentials": None if args.user is None else
        ("%s:%s" % (args.user, args.password)).encode(),
    }
    port = server.server_address[1]
    print("listening on http://127.0.0.1:%d" % port, flush=True)
    if args.port_file:
        # Written whole, then renamed, so a reader never sees half a number.
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(args.port_file + ".tmp", args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    main()

"""Hostile values end to end: every one is either rejected with a clear code
(a CustomerRejected naming the field, or a dead letter with its reason) or
stored verbatim and read back identical by `mesh-worker customers show`.

The requests are written field by field with python3-avro, so a test can
put bytes the schema's writer would never produce (lengths beyond the
message, invalid UTF-8) exactly where a field's value goes."""

import io
import json
import os
import subprocess
import time
import uuid

import avro.io
import pytest
from confluent_kafka import Consumer

import harness
from harness import TOPIC_DLQ, TOPIC_EVENTS, request

SQL = "Robert'); DROP TABLE customers;--\\ % _ $1 \"q\" /* */"


def zigzag(n):
    """Avro's variable-length zig-zag long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def raw_string(data):
    return zigzag(len(data)) + data


def encode_with(avro_codec, datum, raw=None, name="CustomerRequested"):
    """Single-object encodes datum; fields named in raw get those bytes
    written in place of their encoding, and encoding stops after a raw
    value whose name starts with '!' (a truncated message)."""
    schema, fp = avro_codec.schemas[name]
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp.to_bytes(8, "little"))
    enc = avro.io.BinaryEncoder(buf)
    datum = harness._to_avro(schema, datum)
    for field in schema.fields:
        if raw and field.name in raw:
            buf.write(raw[field.name])
            continue
        if raw and "!" + field.name in raw:
            buf.write(raw["!" + field.name])
            break
        avro.io.DatumWriter(field.type).write(datum[field.name], enc)
    return buf.getvalue()


def show(db_url, key):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESH_WORKER_")}
    env["MESH_WORKER_DATABASE_URL"] = db_url
    result = subprocess.run([harness.WORKER, "customers", "show", key],
                            env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def pipeline(pg):
    """One worker on one database and mock cluster for every case."""
    name = "t_hostile_" + uuid.uuid4().hex[:8]
    pg.query("CREATE DATABASE " + name)
    url = "postgresql://postgres@127.0.0.1:%d/%s" % (pg.port, name)
    kafka = harness.MockKafka(partitions=4)
    worker = harness.Worker(kafka.bootstrap, url).start()
    try:
        yield kafka, url, worker
    finally:
        worker.destroy()
        kafka.destroy()


def outcomes(kafka, cases, expect, avro_codec):
    """Produces the cases (request id -> value bytes) and returns, by
    request id, the decoded event, or the headers of the dead letter
    (matched to its case by its unchanged value)."""
    producer = harness.producer(kafka.bootstrap, **{
        "message.max.bytes": 4 * 1024 * 1024})
    for value in cases.values():
        producer.produce(harness.TOPIC_REQUESTS, key=b"msp-h", value=value)
        producer.poll(0)
    assert producer.flush(60) == 0
    by_value = {v: k for k, v in cases.items()}
    got = {}
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap,
                         "group.id": "hostile-" + uuid.uuid4().hex,
                         "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([TOPIC_EVENTS, TOPIC_DLQ])
    deadline = time.monotonic() + 120
    try:
        while len(got) < len(cases) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            if m.topic() == TOPIC_DLQ:
                got[by_value[m.value()]] = dict(m.headers())
            else:
                _, datum = avro_codec.decode(m.value())
                got[datum["request_id"]] = datum
    finally:
        consumer.close()
    assert set(got) == set(cases), "no outcome for %s" % [
        expect[rid] for rid in set(cases) - set(got)]
    return got


def test_hostile_values_are_rejected_or_kept_verbatim(pipeline, avro_codec):
    kafka, url, worker = pipeline
    cases, expect, verbatim = {}, {}, {}

    def add(value, outcome, rid):
        cases[rid] = value
        expect[rid] = outcome

    def req(**fields):
        return request(**dict({"msp_id": "msp-h"}, **fields))

    # Declared lengths far beyond the bytes present.
    r = req()
    add(encode_with(avro_codec, r, {"!request_id": zigzag(1 << 40) + b"ab"}),
        ("dlq", "corrupt-avro"), r["request_id"])
    r = req()
    add(encode_with(avro_codec, r, {
        "!additional_domains": zigzag(1 << 30) + raw_string(b"x.example")}),
        ("dlq", "corrupt-avro"), r["request_id"])
    r = req()
    add(encode_with(avro_codec, r, {
        "!company_name": zigzag((1 << 20) + 5) + b"short"}),
        ("dlq", "corrupt-avro"), r["request_id"])
    # A message of exactly 1 MiB is read (and its 1 MiB name refused); one
    # byte more is a dead letter.
    for extra, outcome in ((0, ("rejected", {"company_name":
                                             "INVALID_FIELD"})),
                           (1, ("dlq", "oversize"))):
        r = req()
        base = len(encode_with(avro_codec, dict(r, company_name="")))
        size = 1024 * 1024 - base
        size -= len(zigzag(size)) - 1
        value = encode_with(avro_codec, dict(r, company_name="n" * (size +
                                                                    extra)))
        assert len(value) == 1024 * 1024 + extra, len(value)
        add(value, outcome, r["request_id"])
    # Invalid UTF-8, NUL, control and format characters.
    for bad in (b"Caf\xc3", b"\xff\xfe", b"\xed\xa0\x80surrogate",
                b"\xc0\xafoverlong"):
        r = req()
        add(encode_with(avro_codec, r, {"company_name": raw_string(bad)}),
            ("rejected", {"company_name": "INVALID_FIELD"}), r["request_id"])
    # A NUL byte cannot be kept verbatim in PostgreSQL text: a dead letter.
    for field in ("company_name", "requested_by", "msp_id"):
        r = req()
        add(encode_with(avro_codec, r, {field: raw_string(b"Evil\0Co")}),
            ("dlq", "corrupt-avro"), r["request_id"])
    for text in ("Bell\x07Co", "Esc\x1b[31mCo", "C1\u0085Co",
                 "Evil\u202eCorp", "Emb\u202aed", "Iso\u2066late\u2069",
                 "Zero\u200bWidth", "Line\u2028Sep", "Bom\ufeffCo",
                 "Tag\U000e0041Co"):
        r = req(company_name=text)
        add(avro_codec.encode("CustomerRequested", r),
            ("rejected", {"company_name": "INVALID_FIELD"}), r["request_id"])
    r = req(policy_template_id="tpl\u202e1")
    add(avro_codec.encode("CustomerRequested", r),
        ("rejected", {"policy_template_id": "INVALID_FIELD"}),
        r["request_id"])
    # SQL metacharacters: stored verbatim where the field allows them,
    # refused with a clear code where its syntax does not.
    r = req(company_name=SQL, policy_template_id="tpl-'; --")
    add(avro_codec.encode("CustomerRequested", r), ("created", None),
        r["request_id"])
    verbatim[r["request_id"]] = r
    r = req(msp_id="msp-';--")
    add(avro_codec.encode("CustomerRequested", r), ("created", None),
        r["request_id"])
    verbatim[r["request_id"]] = r
    # Scripts and joiners that names need are text, not formatting tricks.
    r = req(company_name="\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 "
                         "\U0001f468\u200d\U0001f4bb \u00c5ngstr\u00f6m")
    add(avro_codec.encode("CustomerRequested", r), ("created", None),
        r["request_id"])
    verbatim[r["request_id"]] = r
    r = req(primary_domain="x'; DROP TABLE customers;--.example.com",
            delivery_destination="mail.example.com; DROP",
            default_admin_email="a'--@example.com\u202e")
    add(avro_codec.encode("CustomerRequested", r),
        ("rejected", {"primary_domain": "INVALID_FIELD",
                      "delivery_destination": "INVALID_FIELD",
                      "default_admin_email": "INVALID_FIELD"}),
        r["request_id"])
    t = {"request_id": str(uuid.uuid4()), "requested_at": 1764000000000,
         "requested_by": "u@msp.example", "msp_id": "msp-h",
         "customer_id": None, "effective_at": None}
    add(encode_with(avro_codec, t, {
        "customer_id": raw_string(b"'; DELETE FROM customers; --")},
        name="CustomerTerminationRequested"),
        ("rejected", {"customer_id": "INVALID_FIELD"}), t["request_id"])

    got = outcomes(kafka, cases, expect, avro_codec)
    for rid, (kind, detail) in expect.items():
        seen = got[rid]
        if kind == "dlq":
            assert "dlq.reason" in seen, (rid, kind, detail, seen)
            assert seen["dlq.reason"] == detail.encode(), (detail, seen)
            assert seen["dlq.error"], seen
        elif kind == "rejected":
            errors = {e["field"]: e["code"] for e in seen.get("errors", [])}
            assert errors == detail, (rid, seen)
            for e in seen["errors"]:
                # The message names the field and is safe to display.
                assert e["message"].endswith("."), e
                for ch in e["message"]:
                    assert ch not in "\u202a\u202b\u202c\u202d\u202e" \
                        "\u2066\u2067\u2068\u2069\u200b\ufeff\0", e
        else:
            assert "customer_id" in seen and "errors" not in seen, seen
    for rid, r in verbatim.items():
        shown = show(url, harness.customer_id(rid))
        for field in ("company_name", "policy_template_id", "msp_id"):
            assert shown["customer"][field] == r[field], (field, shown)
        assert [d["domain"] for d in shown["domains"]] == [r["primary_domain"]]

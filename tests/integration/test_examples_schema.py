"""
Every example in examples/ is a request the published contract accepts:
converted the way `mesh-worker produce` converts JSON (ISO-8601 times to
epoch milliseconds, missing fields to their schema defaults, enums as
symbols, unions unwrapped), it validates against schemas/*.avsc with the
reference Avro implementation, encodes, and decodes to the same values.

This checks the examples against the schemas, not the worker: a peer team
that takes an example and encodes it with schemas/ must not fail.

Run with Debian's interpreter, which has python3-avro:
    /usr/bin/python3 -m pytest tests/integration/test_examples_schema.py
"""
import datetime
import io
import json
import os
from pathlib import Path

import avro.io
import avro.name
import avro.schema
import pytest

ROOT = Path(os.environ.get("MW_SOURCE_DIR")
            or Path(__file__).resolve().parents[2])
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"
NAMESPACE = "mesh.provisioning"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def parse_schema_files():
    """
    Parses every schemas/*.avsc and returns {file name: schema}.  A file
    that refers to a named type of another file is parsed after that file,
    with the names the others defined.
    """
    texts = {p.name: json.loads(p.read_text(encoding="utf-8"))
             for p in sorted(SCHEMAS.glob("*.avsc"))}
    parsed = {}
    pending = []
    for name, data in texts.items():
        try:
            parsed[name] = avro.schema.make_avsc_object(data,
                                                        avro.name.Names())
        except avro.errors.SchemaParseException:
            pending.append(name)
    order = []
    while pending:
        progress = False
        for name in list(pending):
            names = avro.name.Names()
            try:
                for done in order:
                    avro.schema.make_avsc_object(texts[done], names)
                parsed[name] = avro.schema.make_avsc_object(texts[name], names)
            except avro.errors.SchemaParseException:
                continue
            order.append(name)
            pending.remove(name)
            progress = True
        if not progress:
            errors = []
            for name in pending:
                try:
                    avro.schema.make_avsc_object(texts[name], avro.name.Names())
                except avro.errors.SchemaParseException as e:
                    errors.append(f"{name}: {e}")
            pytest.fail("schemas that do not parse: " + "; ".join(errors))
    return parsed


def records_in(schema, found):
    """Collects the record schemas reachable from schema by full name."""
    if isinstance(schema, avro.schema.RecordSchema):
        if schema.fullname in found:
            return found
        found[schema.fullname] = schema
        for field in schema.fields:
            records_in(field.type, found)
    elif isinstance(schema, avro.schema.UnionSchema):
        for branch in schema.schemas:
            records_in(branch, found)
    elif isinstance(schema, avro.schema.ArraySchema):
        records_in(schema.items, found)
    elif isinstance(schema, avro.schema.MapSchema):
        records_in(schema.values, found)
    return found


def record_schema(short_name):
    """
    The record `mesh.provisioning.<short_name>`: from <short_name>.avsc
    when that file exists (it must, for CustomerRequested), else from any
    schema file that holds it, e.g. a topic's union.
    """
    parsed = parse_schema_files()
    fullname = f"{NAMESPACE}.{short_name}"
    own = f"{short_name}.avsc"
    if own in parsed:
        schema = parsed[own]
        assert isinstance(schema, avro.schema.RecordSchema), \
            f"{own} is not a record"
        assert schema.fullname == fullname, \
            f"{own} defines {schema.fullname}, expected {fullname}"
        return schema
    for name, schema in parsed.items():
        found = records_in(schema, {})
        if fullname in found:
            return found[fullname]
    pytest.fail(f"no schema in {SCHEMAS} defines {fullname}")


def parse_time(text):
    """ISO-8601 UTC ("2026-11-25T09:00:00Z") to an aware datetime."""
    assert text.endswith("Z"), f"time not in UTC: {text!r}"
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00")


def epoch_ms(moment):
    """Epoch milliseconds of an aware datetime (or of a long, unchanged)."""
    if isinstance(moment, int):
        return moment
    return (moment - EPOCH) // datetime.timedelta(milliseconds=1)


def converted(schema, value, path):
    """
    The example's JSON value as the datum schema expects.  A time becomes
    epoch milliseconds for a plain long; for a timestamp-millis long the
    Python implementation wants the aware datetime those milliseconds
    stand for (it writes them as the same long).
    """
    if isinstance(schema, avro.schema.UnionSchema):
        if value is None:
            return None
        branches = [s for s in schema.schemas if s.type != "null"]
        assert len(branches) == 1, f"{path}: ambiguous union"
        return converted(branches[0], value, path)
    if isinstance(schema, avro.schema.TimestampMillisSchema):
        assert isinstance(value, str), f"{path}: expected an ISO time"
        ms = epoch_ms(parse_time(value))
        return EPOCH + datetime.timedelta(milliseconds=ms)
    if schema.type == "long" and isinstance(value, str):
        return epoch_ms(parse_time(value))
    if isinstance(schema, avro.schema.ArraySchema) and isinstance(value, list):
        return [converted(schema.items, v, f"{path}[{i}]")
                for i, v in enumerate(value)]
    if isinstance(schema, avro.schema.RecordSchema):
        return datum_for(schema, value, path)
    return value


def datum_for(schema, obj, path):
    """A record datum from a JSON object, defaults filled in."""
    unknown = sorted(set(obj) - {f.name for f in schema.fields} - {"type"})
    assert not unknown, f"{path}: fields not in {schema.name}: {unknown}"
    datum = {}
    for field in schema.fields:
        if field.name in obj:
            datum[field.name] = converted(field.type, obj[field.name],
                                          f"{path}.{field.name}")
        elif field.has_default:
            datum[field.name] = converted(field.type, field.default,
                                          f"{path}.{field.name}")
    return datum


def roundtrip(schema, datum):
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    buf.seek(0)
    return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(buf))


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def test_there_are_examples():
    assert len(EXAMPLE_FILES) >= 12, f"only {len(EXAMPLE_FILES)} examples"


def test_request_schema_is_the_contract():
    schema = record_schema("CustomerRequested")
    names = [f.name for f in schema.fields]
    assert names[:4] == ["request_id", "requested_at", "requested_by",
                         "msp_id"], names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_a_valid_datum(path):
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    assert isinstance(obj, dict), f"{path.name}: not one JSON object"
    kind = obj.get("type", "CustomerRequested")
    assert kind in ("CustomerRequested", "CustomerTerminationRequested",
                    "CustomerUpdateRequested"), \
        f"{path.name}: unknown type {kind!r}"
    schema = record_schema(kind)
    datum = datum_for(schema, obj, path.name)
    missing = sorted(f.name for f in schema.fields if f.name not in datum)
    assert not missing, f"{path.name}: required fields missing: {missing}"
    try:
        avro.io.validate(schema, datum, raise_on_error=True)
    except avro.errors.AvroTypeException as e:
        pytest.fail(f"{path.name} does not validate against {kind}: {e}")
    assert roundtrip(schema, datum) == datum
    if kind == "CustomerUpdateRequested":
        assert epoch_ms(datum["observed_at"]) == epoch_ms(
            parse_time(obj["observed_at"]))
    requested_at = datum["requested_at"]
    assert epoch_ms(requested_at) == epoch_ms(parse_time(obj["requested_at"]))


def test_examples_update_customers_in_every_outcome():
    """The update examples cover each outcome README names: licenses from
    the sync, a stale sync, monitor mode off, a domain added and one
    taken, a trial bought early and a terminated customer."""
    updates = {p.name: json.loads(p.read_text(encoding="utf-8"))
               for p in EXAMPLE_FILES
               if '"CustomerUpdateRequested"' in p.read_text(encoding="utf-8")}
    names = " ".join(sorted(updates))
    for hint in ("licenses-from-sync", "stale-sync", "monitor-mode-off",
                 "add-domain", "add-taken-domain", "buy-trial-early",
                 "terminated-customer"):
        assert hint in names, f"no update example for {hint}"
    sources = {u["source"] for u in updates.values()}
    assert sources == {"MSP", "M365_SYNC"}, sources

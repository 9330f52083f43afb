"""The customer lifecycle, end to end: trial reminders and conversions,
terminations now or later, fired by the scheduler of every replica exactly
once.  A real PostgreSQL, librdkafka's mock cluster and mesh-worker
processes; time is moved with MESH_WORKER_CLOCK_OFFSET_MS (the worker's
test clock, same code path), so a 14-day trial ends in seconds.  Events
are decoded with python3-avro against schemas/."""

import collections
import json
import os
import signal
import subprocess
import time
import uuid

import harness
from harness import TOPIC_EVENTS, request

DAY_MS = 86400 * 1000
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TERM_TRACEPARENT = b"00-11111111111111111111111111111111-2222222222222222-01"
# Past every default trial end (14 days) and reminder (3 days before).
LATER = {"MESH_WORKER_CLOCK_OFFSET_MS": str(15 * DAY_MS)}
FAST = {"MESH_WORKER_SCHEDULER_INTERVAL": "100ms"}


def now_ms():
    return int(time.time() * 1000)


def trial(**fields):
    fields.setdefault("account_type", "TRIAL")
    return request(**fields)


def termination(customer_id, effective_at=None, msp_id="msp-1",
                request_id=None):
    return {
        "request_id": request_id or str(uuid.uuid4()),
        "requested_at": now_ms(),
        "requested_by": "user@msp.example",
        "msp_id": msp_id,
        "customer_id": customer_id,
        "effective_at": effective_at,
    }


def produce_requests(kafka, avro_codec, datums):
    harness.produce_all(kafka.bootstrap, [
        (d["msp_id"].encode(), avro_codec.encode("CustomerRequested", d),
         [("traceparent", TRACEPARENT)]) for d in datums])


def produce_terminations(kafka, avro_codec, datums):
    harness.produce_all(kafka.bootstrap, [
        (d["msp_id"].encode(),
         avro_codec.encode("CustomerTerminationRequested", d),
         [("traceparent", TERM_TRACEPARENT)]) for d in datums])


def decoded(avro_codec, messages):
    out = []
    for m in messages:
        name, datum = avro_codec.decode(m["value"])
        out.append((name, datum, m))
    return out


def read_events(kafka, avro_codec, until, timeout=180):
    """Reads customer.events until until(decoded events) holds."""
    return decoded(avro_codec, harness.read_topic(
        kafka.bootstrap, TOPIC_EVENTS,
        lambda ms: until(decoded(avro_codec, ms)), timeout=timeout))


def count_of(events, name):
    return sum(1 for n, _, _ in events if n == name)


def count(db, sql, *params):
    """The first column of the first row; 0 before the migrations ran."""
    import psycopg2
    try:
        return db.query(sql, *params)[0][0]
    except psycopg2.errors.UndefinedTable:
        return 0


def provision(db, kafka, workers, avro_codec, datums, **env):
    """Provisions datums with one worker, then stops it."""
    produce_requests(kafka, avro_codec, datums)
    w = workers(kafka.bootstrap, db.url, **env)
    harness.wait_for(
        lambda: count(db, "SELECT count(*) FROM requests") >= len(datums),
        120, "the requests to be provisioned")
    assert w.stop() == 0
    return [harness.customer_id(d["request_id"]) for d in datums]


def fired_timers(db):
    return count(db, "SELECT count(*) FROM timer_history WHERE NOT cancelled")


def fire_rate(db):
    """Timers fired per second, from the first to the last fired_at."""
    count, span = db.query(
        "SELECT count(*), extract(epoch FROM max(fired_at) - min(fired_at)) "
        "FROM timer_history WHERE NOT cancelled")[0]
    return count, float(span or 0)


def check_trial_events_once(events, customers):
    """Exactly one TrialEnding and one TrialConverted per customer, with
    distinct event ids, keyed and timed as the contract says."""
    by_type = collections.defaultdict(collections.Counter)
    event_ids = collections.Counter()
    for name, datum, msg in events:
        if name not in ("TrialEnding", "TrialConverted"):
            continue
        by_type[name][datum["customer_id"]] += 1
        event_ids[datum["event_id"]] += 1
        assert msg["key"] == datum["customer_id"].encode()
        assert datum["event_id"] == harness.event_id(name,
                                                     datum["customer_id"])
        assert msg["headers"]["event_type"] == name.encode()
        assert msg["headers"]["traceparent"] == TRACEPARENT
        if name == "TrialConverted":
            assert datum["billing_starts_at"] == datum["trial_ended_at"]
            assert datum["trial_ended_at"] == \
                datum["trial_started_at"] + 14 * DAY_MS
    wanted = set(customers)
    for name in ("TrialEnding", "TrialConverted"):
        assert set(by_type[name]) == wanted, (name, len(by_type[name]))
        twice = [c for c, n in by_type[name].items() if n != 1]
        assert not twice, (name, twice[:5])
    twice = [e for e, n in event_ids.items() if n != 1]
    assert not twice, twice[:5]


def test_thousand_trials_due_at_once_fire_once_across_three_replicas(
        db, kafka, workers, avro_codec):
    datums = [trial(msp_id="msp-%d" % (i % 7)) for i in range(1000)]
    customers = provision(db, kafka, workers, avro_codec, datums)
    assert db.query("SELECT count(*) FROM timers")[0][0] == 2000

    started = time.monotonic()
    for _ in range(3):
        workers(kafka.bootstrap, db.url, **LATER)
    harness.wait_for(lambda: fired_timers(db) >= 2000, 180,
                     "2000 timers to fire")
    elapsed = time.monotonic() - started
    fired, span = fire_rate(db)
    print("3 replicas: %d timers fired in %.2f s from first to last "
          "(%.0f timers/s); %.2f s from start" % (
              fired, span, fired / max(span, 0.001), elapsed))

    events = read_events(kafka, avro_codec,
                         lambda ev: len(ev) >= 3000)
    assert len(events) == 3000
    check_trial_events_once(events, customers)
    assert db.query("SELECT count(*) FROM customers WHERE status = 'ACTIVE' "
                    "AND billable AND billing_starts_at = trial_ends_at"
                    )[0][0] == 1000
    assert db.query("SELECT count(*), count(DISTINCT (customer_id, kind)) "
                    "FROM timer_history") == [(2000,
                                                                   2000)]
    # Every replica's scheduler took part or stood by; none doubled.
    assert db.query("SELECT count(*) FROM timer_history WHERE cancelled"
                    )[0][0] == 0


def test_worker_down_with_500_trials_overdue_fires_each_once_after_restart(
        db, kafka, workers, avro_codec):
    datums = [trial(msp_id="msp-%d" % (i % 5)) for i in range(500)]
    customers = provision(db, kafka, workers, avro_codec, datums)

    started = time.monotonic()
    w = workers(kafka.bootstrap, db.url, **LATER)
    harness.wait_for(lambda: fired_timers(db) >= 1000, 180,
                     "1000 overdue timers to fire")
    elapsed = time.monotonic() - started
    fired, span = fire_rate(db)
    print("1 replica: %d timers fired in %.2f s from first to last "
          "(%.0f timers/s); %.2f s from start" % (
              fired, span, fired / max(span, 0.001), elapsed))
    events = read_events(kafka, avro_codec, lambda ev: len(ev) >= 1500)
    assert len(events) == 1500
    check_trial_events_once(events, customers)
    # Oldest first: each reminder went out before its conversion.
    order = collections.defaultdict(list)
    for name, datum, _ in events:
        order[datum["customer_id"]].append(name)
    assert all(o == ["CustomerCreated", "TrialEnding", "TrialConverted"]
               for o in order.values())
    assert w.stop() == 0


def test_termination_before_trial_end_never_converts_and_frees_domain(
        db, kafka, workers, avro_codec):
    first = trial()
    produce_requests(kafka, avro_codec, [first])
    w = workers(kafka.bootstrap, db.url, **FAST)
    customer = harness.customer_id(first["request_id"])
    read_events(kafka, avro_codec,
                lambda ev: count_of(ev, "CustomerCreated") >= 1)
    term = termination(customer)
    produce_terminations(kafka, avro_codec, [term])
    events = read_events(kafka, avro_codec,
                         lambda ev: count_of(ev, "CustomerTerminated") >= 1)
    assert w.stop() == 0
    (name, datum, msg), = [e for e in events if e[0] == "CustomerTerminated"]
    assert datum["customer_id"] == customer
    assert datum["request_id"] == term["request_id"]
    assert datum["was_trial"] is True
    assert datum["event_id"] == harness.event_id("CustomerTerminated",
                                                 term["request_id"])
    assert msg["key"] == customer.encode()
    assert msg["headers"]["request_id"] == term["request_id"].encode()
    assert msg["headers"]["traceparent"] == TERM_TRACEPARENT
    assert db.query("SELECT count(*) FROM timers WHERE customer_id = %s "
                    "AND fired_at IS NULL", customer)[0][0] == 0
    # The log counts the reminder and the conversion the termination
    # cancelled, though neither was due.
    rounds = [json.loads(line) for line in w.log_text().splitlines()
              if '"timers fired"' in line]
    assert sum(r["fired"] for r in rounds) == 1, rounds
    assert sum(r["cancelled"] for r in rounds) == 2, rounds
    # Terminated on trial: billing never started, and customers show says so.
    shown = subprocess.run(
        [harness.WORKER, "customers", "show", customer],
        env=w.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=60)
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)["customer"]
    assert row["status"] == "TERMINATED"
    assert row["billing_starts_at"] is None, row
    assert row["trial_ends_at"] is not None
    assert json.loads(shown.stdout)["pending_timers"] == []

    # Past the trial end: nothing more for it; its domain is free again.
    second = request(primary_domain=first["primary_domain"], msp_id="msp-2")
    produce_requests(kafka, avro_codec, [second])
    workers(kafka.bootstrap, db.url, **dict(FAST, **LATER))
    events = read_events(kafka, avro_codec,
                         lambda ev: count_of(ev, "CustomerCreated") >= 2)
    created = [d for n, d, _ in events if n == "CustomerCreated"]
    assert created[-1]["primary_domain"] == first["primary_domain"]
    assert created[-1]["customer_id"] == harness.customer_id(
        second["request_id"])
    about_first = [n for n, d, _ in events if d.get("customer_id") == customer]
    assert about_first == ["CustomerCreated", "CustomerTerminated"], \
        about_first
    status = db.query("SELECT status FROM customers WHERE customer_id = %s",
                      customer)
    assert status == [("TERMINATED",)]


def test_termination_after_trial_end_converts_first_in_key_order(
        db, kafka, workers, avro_codec):
    first = trial()
    produce_requests(kafka, avro_codec, [first])
    w = workers(kafka.bootstrap, db.url)
    customer = harness.customer_id(first["request_id"])
    events = read_events(kafka, avro_codec,
                         lambda ev: count_of(ev, "CustomerCreated") >= 1)
    trial_ends_at = events[0][1]["trial_ends_at"]
    term = termination(customer, effective_at=trial_ends_at + 3600 * 1000)
    produce_terminations(kafka, avro_codec, [term])
    harness.wait_for(
        lambda: count(db, "SELECT count(*) FROM terminations") == 1, 60,
        "the termination to be scheduled")
    assert w.stop() == 0

    # Both due while the worker was down: the conversion comes first.
    later = {"MESH_WORKER_CLOCK_OFFSET_MS": str(16 * DAY_MS)}
    workers(kafka.bootstrap, db.url, **later)
    events = read_events(kafka, avro_codec,
                         lambda ev: count_of(ev, "CustomerTerminated") >= 1)
    mine = sorted(((m["partition"], m["offset"]), n, d)
                  for n, d, m in events if d.get("customer_id") == customer)
    assert len({p for (p, _), _, _ in mine}) == 1
    assert [n for _, n, _ in mine] == [
        "CustomerCreated", "TrialEnding", "TrialConverted",
        "CustomerTerminated"], mine
    terminated = mine[-1][2]
    assert terminated["was_trial"] is False
    assert terminated["terminated_at"] == term["effective_at"]
    assert mine[2][2]["billing_starts_at"] == trial_ends_at


def test_future_termination_fires_at_its_time_and_duplicates_add_nothing(
        db, kafka, workers, avro_codec):
    buy_now = request()
    produce_requests(kafka, avro_codec, [buy_now])
    workers(kafka.bootstrap, db.url, **FAST)
    customer = harness.customer_id(buy_now["request_id"])
    read_events(kafka, avro_codec,
                lambda ev: count_of(ev, "CustomerCreated") >= 1)
    effective = now_ms() + 4000
    term = termination(customer, effective_at=effective)
    other = termination(customer)
    produce_terminations(kafka, avro_codec, [term, term, other])
    events = read_events(
        kafka, avro_codec,
        lambda ev: count_of(ev, "CustomerTerminated") >= 1 and
        count_of(ev, "CustomerRejected") >= 1)
    terminated = [d for n, d, _ in events if n == "CustomerTerminated"]
    assert len(terminated) == 1
    assert terminated[0]["request_id"] == term["request_id"]
    assert terminated[0]["terminated_at"] == effective
    assert terminated[0]["occurred_at"] >= effective
    assert terminated[0]["was_trial"] is False
    rejected, = [d for n, d, _ in events if n == "CustomerRejected"]
    assert rejected["request_id"] == other["request_id"]
    assert [e["code"] for e in rejected["errors"]] == ["ALREADY_TERMINATED"]

    # The same termination again, later: nothing new.
    produce_terminations(kafka, avro_codec, [term])
    marker = request()
    produce_requests(kafka, avro_codec, [marker])
    events = read_events(kafka, avro_codec,
                         lambda ev: count_of(ev, "CustomerCreated") >= 2)
    assert count_of(events, "CustomerTerminated") == 1
    assert count_of(events, "CustomerRejected") == 1


def test_replica_killed_holding_claimed_timers_another_fires_them_once(
        db, kafka, workers, avro_codec):
    datums = [trial() for _ in range(50)]
    customers = provision(db, kafka, workers, avro_codec, datums)
    first = db.query("SELECT customer_id::text FROM timers "
                     "ORDER BY due_at, id LIMIT 1")[0][0]

    # Hold one customer's row, so that the replica's scheduler claims its
    # batch of timers and then waits inside its transaction.
    import psycopg2
    blocker = psycopg2.connect(db.url)
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT 1 FROM customers WHERE customer_id = %s "
                        "FOR UPDATE", (first,))
        doomed = workers(kafka.bootstrap, db.url, **LATER)
        harness.wait_for(
            lambda: count(
                db, "SELECT count(*) FROM pg_stat_activity WHERE "
                "wait_event_type = 'Lock' AND query LIKE "
                "'%%mw_fire_due_timers%%'") == 1,
            60, "the scheduler to hold its claimed timers")
        held = db.query(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c "
            "ON c.oid = l.relation WHERE c.relname = 'timers' "
            "AND l.mode = 'RowShareLock' AND l.granted")[0][0]
        assert held >= 1
        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait()
        # Another replica comes up while the dead one's claim is still
        # held by its server session: it skips those timers.
        workers(kafka.bootstrap, db.url, **dict(FAST, **LATER))
        time.sleep(1)
        assert fired_timers(db) == 0
    finally:
        blocker.rollback()
        blocker.close()
    # The dead session ends once it can; its claim is void and the
    # survivor fires everything, once.
    harness.wait_for(lambda: fired_timers(db) >= 100, 120,
                     "the survivor to fire the timers")
    events = read_events(kafka, avro_codec, lambda ev: len(ev) >= 150)
    assert len(events) == 150
    check_trial_events_once(events, customers)
    assert fired_timers(db) == 100


def migrate_to(db, last):
    """Applies migrations/ up to version last as `mesh-worker migrate`
    does, each with its row in schema_migrations."""
    import psycopg2
    folder = os.path.join(harness.SOURCE_DIR, "migrations")
    conn = psycopg2.connect(db.url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE schema_migrations (version integer "
                        "PRIMARY KEY, name text NOT NULL, applied_at "
                        "timestamptz NOT NULL DEFAULT now())")
        for name in sorted(os.listdir(folder)):
            version = int(name[:4])
            if not name.endswith(".sql") or version > last:
                continue
            with open(os.path.join(folder, name)) as f, conn, \
                    conn.cursor() as cur:
                cur.execute(f.read())
                cur.execute("INSERT INTO schema_migrations (version, name) "
                            "VALUES (%s, %s)", (version, name))
    finally:
        conn.close()


def test_timers_pending_before_the_upgrade_fire_once_after_it(
        db, kafka, workers, avro_codec):
    # A database at 0006, where every timer stays in one table: 30 trials
    # whose reminders fired there, their conversions still pending.
    migrate_to(db, 6)
    created = now_ms() - 60 * 1000
    customers = [harness.customer_id("upgrade-%d" % i) for i in range(30)]
    for i, customer in enumerate(customers):
        db.query(
            "INSERT INTO customers (customer_id, request_id, msp_id, "
            "msp_domain, requested_by, company_name, primary_domain, "
            "mail_platform, service, account_type, licenses, "
            "default_admin_email, apply_global_rules, msp_management, "
            "two_factor_required, monitor_mode, billable, status, "
            "created_at, billing_starts_at, trial_ends_at, traceparent) "
            "VALUES (%s, %s, 'msp-1', 'msp.example', 'user@msp.example', "
            "'Contoso', %s, 'MICROSOFT_365', 'MESH_GATEWAY', 'TRIAL', 25, "
            "'admin@contoso.example', true, true, false, false, false, "
            "'TRIAL', mw_ms_to_ts(%s), mw_ms_to_ts(%s), mw_ms_to_ts(%s), "
            "%s)",
            customer, "upgrade-%d" % i, "upgrade-%d.example" % i, created,
            created + 14 * DAY_MS, created + 14 * DAY_MS,
            TRACEPARENT.decode())
        db.query("INSERT INTO timers (customer_id, kind, due_at, "
                 "created_at) VALUES (%s, 'TRIAL_ENDING', mw_ms_to_ts(%s), "
                 "mw_ms_to_ts(%s)), (%s, 'TRIAL_CONVERSION', "
                 "mw_ms_to_ts(%s), mw_ms_to_ts(%s))",
                 customer, created + 11 * DAY_MS, created, customer,
                 created + 14 * DAY_MS, created)
    fired = db.query("SELECT action, count(*) FROM mw_fire_due_timers(%s, "
                     "1000) GROUP BY action", created + 12 * DAY_MS)
    assert fired == [("FIRED", 30)]
    before = db.query("SELECT id, kind, fired_at FROM timers ORDER BY id")

    # A worker of this release migrates at start, then fires them.
    w = workers(kafka.bootstrap, db.url, **dict(FAST, **LATER))
    harness.wait_for(lambda: count(db, "SELECT count(*) FROM timer_history "
                                   "WHERE NOT cancelled") >= 60, 120,
                     "the pending conversions to fire")
    events = read_events(kafka, avro_codec, lambda ev: len(ev) >= 30)
    assert len(events) == 30
    assert sorted(d["customer_id"] for n, d, _ in events
                  if n == "TrialConverted") == sorted(customers)
    assert w.stop() == 0
    # Every timer once, with its id, the reminders as they fired at 0006.
    assert db.query("SELECT count(*) FROM timers")[0][0] == 0
    after = db.query("SELECT id, kind, fired_at FROM timer_history "
                     "ORDER BY id")
    assert [r[:2] for r in after] == [r[:2] for r in before]
    assert [r for r in after if r[1] == "TRIAL_ENDING"] == \
        [r for r in before if r[1] == "TRIAL_ENDING"]
    assert db.query("SELECT count(*) FROM customers WHERE status = 'ACTIVE' "
                    "AND billable AND billing_starts_at = trial_ends_at"
                    )[0][0] == 30

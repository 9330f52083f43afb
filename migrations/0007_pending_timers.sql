-- Pending timers in their own table, so that firing one writes no index
-- entry for it and its customer's update can be done in place.
--
-- Until 0006 a timer stayed in timers for good: firing it set fired_at,
-- which appears in the predicates of the partial indexes that find the
-- pending ones, so every fired timer was rewritten with a new entry in
-- each of its indexes, and so was its customer (status appeared in the
-- predicate of customers_trial_ends_at).  That row work was nearly all of
-- a round's time.  Now:
--   * timers holds the pending timers only.  The claim functions insert
--     into it as before (same name, same columns), and firing or
--     cancelling a timer deletes it;
--   * timer_history receives every timer that left timers, with fired_at
--     (when it left) and cancelled: one insert into a table indexed by id
--     alone, in the order the timers fire;
--   * customers_trial_ends_at goes: nothing reads it (the timers say
--     when a trial ends), and its predicate on status kept every
--     conversion and termination from being a HOT update.  New customer
--     pages are filled to half, so that every row of a page can be
--     rewritten in place once before the page is pruned: trials that
--     start together end together, and one round converts a page's
--     trials at once.
-- timers keeps fired_at and cancelled, always null and false (checked),
-- so that readers written for 0003-0006, such as a worker of the previous
-- release still running while this one is rolled out, still find the
-- pending timers; a write in the old manner fails instead of hiding a
-- timer.
--
-- The existing table becomes timer_history (its fired and cancelled rows
-- stay where they are, however many), and its pending rows move to the
-- new timers with their ids, to fire there exactly once.

ALTER TABLE timers RENAME TO timer_history;
ALTER INDEX timers_pkey RENAME TO timer_history_pkey;
DROP INDEX timers_customer_kind;
DROP INDEX timers_due;
DROP INDEX timers_customer_pending;
ALTER TABLE timer_history DROP CONSTRAINT timers_customer_id_fkey;
ALTER TABLE timer_history ALTER COLUMN id DROP DEFAULT;
ALTER TABLE timer_history ALTER COLUMN cancelled DROP DEFAULT;

CREATE TABLE timers (
    id bigint PRIMARY KEY DEFAULT nextval('timers_id_seq'),
    customer_id uuid NOT NULL REFERENCES customers (customer_id),
    kind text NOT NULL
        CHECK (kind IN ('TRIAL_ENDING', 'TRIAL_CONVERSION', 'TERMINATION')),
    due_at timestamptz NOT NULL,
    request_id text, -- the termination's request id
    created_at timestamptz NOT NULL,
    fired_at timestamptz CHECK (fired_at IS NULL),
    cancelled boolean NOT NULL DEFAULT false CHECK (NOT cancelled)
);
ALTER SEQUENCE timers_id_seq OWNED BY timers.id;

-- At most one pending timer of each kind a customer (the claim functions'
-- ON CONFLICT), and a customer's pending timers found by customer_id.
CREATE UNIQUE INDEX timers_customer_kind ON timers (customer_id, kind);
-- What the scheduler claims: oldest first.
CREATE INDEX timers_due ON timers (due_at, id);

WITH moved AS (
    DELETE FROM timer_history th
     WHERE th.fired_at IS NULL
    RETURNING th.id, th.customer_id, th.kind, th.due_at, th.request_id,
              th.created_at)
INSERT INTO timers (id, customer_id, kind, due_at, request_id, created_at)
SELECT m.id, m.customer_id, m.kind, m.due_at, m.request_id, m.created_at
  FROM moved m;

ALTER TABLE timer_history ALTER COLUMN fired_at SET NOT NULL;

DROP INDEX customers_trial_ends_at;
ALTER TABLE customers SET (fillfactor = 50);

-- Claims up to p_limit due timers and applies them, as in
-- 0006_withdrawn_timers.sql: the same claim (FOR UPDATE SKIP LOCKED,
-- oldest first), the same locks, the same actions (FIRED, CANCELLED,
-- DEFERRED, WITHDRAWN) and the same rows.  What changes is where a timer
-- goes when it is done: out of timers, into timer_history.
CREATE OR REPLACE FUNCTION mw_fire_due_timers(p_now bigint, p_limit integer)
RETURNS TABLE (
    timer_id bigint,
    action text,
    kind text,
    customer_id uuid,
    customer_request_id text,
    msp_id text,
    requested_by text,
    licenses integer,
    created_at bigint,
    trial_ends_at bigint,
    due_at bigint,
    request_id text,
    traceparent text,
    was_trial boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := mw_ms_to_ts(p_now);
    v_ids bigint[];
    v_customers uuid[];
BEGIN
    SELECT array_agg(d.id), array_agg(d.customer_id) INTO v_ids, v_customers
      FROM (SELECT tm.id, tm.customer_id
              FROM timers tm
             WHERE tm.due_at <= v_now
             ORDER BY tm.due_at, tm.id
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) AS d;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    PERFORM 1
       FROM customers cu
      WHERE cu.customer_id = ANY (v_customers)
      ORDER BY cu.customer_id
        FOR NO KEY UPDATE;

    -- A new snapshot: the customers are read as locked above.
    RETURN QUERY
    WITH claimed AS (
        SELECT tm.id, tm.kind, tm.customer_id, tm.due_at, tm.request_id,
               tm.created_at AS timer_created_at,
               cu.status, cu.request_id AS customer_request_id, cu.msp_id,
               cu.requested_by, cu.licenses, cu.created_at,
               cu.trial_ends_at, cu.traceparent,
               EXISTS (SELECT 1 FROM timers e
                        WHERE e.customer_id = tm.customer_id
                          AND (e.due_at, e.id) < (tm.due_at, tm.id)
                          AND e.id <> ALL (v_ids)) AS is_held_earlier
          FROM timers tm
          JOIN customers cu ON cu.customer_id = tm.customer_id
         WHERE tm.id = ANY (v_ids)),
    preceded AS (
        SELECT cl.*,
               coalesce(bool_or(cl.kind = 'TERMINATION'
                                AND NOT cl.is_held_earlier
                                AND cl.status <> 'TERMINATED') OVER w,
                        false) AS is_terminated_before,
               coalesce(bool_or(cl.kind = 'TRIAL_CONVERSION'
                                AND NOT cl.is_held_earlier) OVER w,
                        false) AS is_converted_before
          FROM claimed cl
        WINDOW w AS (PARTITION BY cl.customer_id
                     ORDER BY cl.due_at, cl.id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
    staged AS (
        SELECT pr.*,
               CASE
                   WHEN pr.status = 'TERMINATED' OR pr.is_terminated_before
                       THEN 'TERMINATED'
                   WHEN pr.status = 'TRIAL' AND pr.is_converted_before
                       THEN 'ACTIVE'
                   ELSE pr.status
               END AS status_before
          FROM preceded pr),
    plan AS (
        SELECT st.*,
               CASE
                   -- Cancelled by an earlier timer of this batch.
                   WHEN st.is_terminated_before THEN 'CANCELLED'
                   WHEN st.is_held_earlier THEN 'DEFERRED'
                   WHEN (st.kind IN ('TRIAL_ENDING', 'TRIAL_CONVERSION')
                         AND st.status_before <> 'TRIAL')
                        OR (st.kind = 'TERMINATION'
                            AND st.status_before = 'TERMINATED')
                       THEN 'CANCELLED'
                   ELSE 'FIRED'
               END AS action
          FROM staged st),
    fired_terminations AS (
        SELECT p.id, p.customer_id, p.request_id
          FROM plan p
         WHERE p.action = 'FIRED' AND p.kind = 'TERMINATION'),
    -- The claimed rows by primary key (an array, so that the planner
    -- never reads the whole table for a thousand ids), and the pending
    -- timers of customers terminated here.  The two sets are disjoint.
    claimed_done AS (
        DELETE FROM timers tm
         WHERE tm.id = ANY (ARRAY(SELECT p.id FROM plan p
                                   WHERE p.action <> 'DEFERRED'))),
    withdrawn AS (
        DELETE FROM timers tm
         USING fired_terminations f
         WHERE tm.customer_id = f.customer_id
           AND tm.id <> ALL (v_ids)
        RETURNING tm.id, tm.kind, tm.customer_id, tm.due_at, tm.request_id,
                  tm.created_at),
    history AS (
        INSERT INTO timer_history (id, customer_id, kind, due_at,
                                   request_id, created_at, fired_at,
                                   cancelled)
        SELECT p.id, p.customer_id, p.kind, p.due_at, p.request_id,
               p.timer_created_at, v_now, p.action = 'CANCELLED'
          FROM plan p
         WHERE p.action <> 'DEFERRED'
        UNION ALL
        SELECT w.id, w.customer_id, w.kind, w.due_at, w.request_id,
               w.created_at, v_now, true
          FROM withdrawn w),
    customers_done AS (
        UPDATE customers cu
           SET status = CASE WHEN a.is_terminated THEN 'TERMINATED'
                             ELSE 'ACTIVE' END,
               billable = NOT a.is_terminated,
               -- cu.status is the status before this statement.
               billing_starts_at = CASE WHEN a.is_converted
                                        THEN cu.trial_ends_at
                                        WHEN a.is_terminated
                                             AND cu.status = 'TRIAL'
                                        THEN NULL
                                        ELSE cu.billing_starts_at END,
               terminated_at = CASE WHEN a.is_terminated
                                    THEN a.terminated_at
                                    ELSE cu.terminated_at END
          FROM (SELECT p.customer_id,
                       bool_or(p.kind = 'TERMINATION') AS is_terminated,
                       bool_or(p.kind = 'TRIAL_CONVERSION') AS is_converted,
                       max(p.due_at) FILTER (WHERE p.kind = 'TERMINATION')
                           AS terminated_at
                  FROM plan p
                 WHERE p.action = 'FIRED'
                   AND p.kind IN ('TRIAL_CONVERSION', 'TERMINATION')
                 GROUP BY p.customer_id) AS a
         WHERE cu.customer_id = a.customer_id),
    domains_done AS (
        UPDATE customer_domains cd
           SET released_at = v_now
          FROM fired_terminations f
         WHERE cd.customer_id = f.customer_id
           AND cd.released_at IS NULL),
    applied AS (
        UPDATE terminations tr
           SET applied_at = v_now
          FROM fired_terminations f
         WHERE tr.request_id = f.request_id
        RETURNING f.id, tr.traceparent)
    SELECT p.id, p.action, p.kind, p.customer_id, p.customer_request_id,
           p.msp_id, p.requested_by, p.licenses,
           (extract(epoch FROM p.created_at) * 1000)::bigint,
           (extract(epoch FROM p.trial_ends_at) * 1000)::bigint,
           (extract(epoch FROM p.due_at) * 1000)::bigint, p.request_id,
           -- A fired termination's event carries the termination's.
           CASE WHEN p.action = 'FIRED' AND p.kind = 'TERMINATION'
                THEN ap.traceparent
                ELSE p.traceparent END,
           p.status_before = 'TRIAL'
      FROM plan p
      LEFT JOIN applied ap ON ap.id = p.id
    UNION ALL
    SELECT w.id, 'WITHDRAWN', w.kind, w.customer_id, cu.request_id,
           cu.msp_id, cu.requested_by, cu.licenses,
           (extract(epoch FROM cu.created_at) * 1000)::bigint,
           (extract(epoch FROM cu.trial_ends_at) * 1000)::bigint,
           (extract(epoch FROM w.due_at) * 1000)::bigint, w.request_id,
           cu.traceparent, false
      FROM withdrawn w
      JOIN customers cu ON cu.customer_id = w.customer_id
     -- due_at in milliseconds, then the id: (due_at, id) order.
     ORDER BY 11, 1;
END
$$;

-- Cancels a customer's pending timers of the kinds given (every kind
-- when p_kinds is null): they leave timers for timer_history, cancelled,
-- at p_now.  Returns how many.  For a change that ends what the timers
-- were for (a trial bought before its end cancels its reminder and
-- conversion); the caller holds the customer's row lock, as a fired
-- termination does, so that the timers it cancels are not being applied
-- meanwhile.  A timer a scheduler holds is waited for: when that
-- scheduler commits, the timer is gone and is not counted.
CREATE FUNCTION mw_cancel_pending_timers(p_customer_id uuid, p_kinds text[],
                                         p_now bigint)
RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (
        DELETE FROM timers tm
         WHERE tm.customer_id = p_customer_id
           AND (p_kinds IS NULL OR tm.kind = ANY (p_kinds))
        RETURNING tm.id, tm.customer_id, tm.kind, tm.due_at, tm.request_id,
                  tm.created_at),
    kept AS (
        INSERT INTO timer_history (id, customer_id, kind, due_at,
                                   request_id, created_at, fired_at,
                                   cancelled)
        SELECT g.id, g.customer_id, g.kind, g.due_at, g.request_id,
               g.created_at, mw_ms_to_ts(p_now), true
          FROM gone g
        RETURNING 1)
    SELECT count(*)::integer FROM kept
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            GRANT SELECT, INSERT, UPDATE, DELETE ON timers TO mesh_worker;
            GRANT EXECUTE ON FUNCTION
                mw_cancel_pending_timers(uuid, text[], bigint)
               TO mesh_worker;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'privileges not granted to mesh_worker: %',
                             SQLERRM;
        END;
    END IF;
END
$$;

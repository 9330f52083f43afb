-- mw_fire_due_timers, set-based: the same claim, the same actions and the
-- same rows as in 0003_lifecycle.sql, in three statements a call however
-- many timers it claims (the claim, the customer locks, then one statement
-- that decides every action and applies them all).  Applying timers one by
-- one took several statements each, which made PostgreSQL the limit when
-- many timers fall due at once.
--
-- Invariants kept here, as in 0003:
--   * a customer's timers take effect in (due_at, id) order;
--   * customers are locked in customer_id order before any is changed;
--   * "now" is always a parameter, never the database's now().
--
-- Why one statement can decide in order: a customer has at most one timer
-- of each kind, so what a timer does depends only on the customer's state
-- when it was claimed and on which earlier timers of the same customer in
-- the batch fired.  Those are read with window functions over the claimed
-- set, partitioned by customer, ordered by (due_at, id):
--   * a timer is DEFERRED when a pending timer of its customer outside the
--     batch comes before it (held by another transaction); every later
--     timer of that customer in the batch is then deferred too, since the
--     held one is earlier than they are as well;
--   * a termination fires when it is not deferred and the customer is not
--     already terminated; every later timer of the customer in the batch is
--     then CANCELLED, and its pending timers outside the batch with it;
--   * a conversion fires when it is not deferred and the customer is still
--     on trial; a later trial timer of the customer in the batch then finds
--     it ACTIVE and is CANCELLED.
-- The customer's status before each timer (was_trial) follows from the
-- same two facts.  The statement updates each row at most once, as a
-- statement must: a claimed timer that fired or was cancelled, a pending
-- timer outside the batch of a customer terminated in it, a customer with
-- the net effect of its conversion and its termination.
--
-- Known limit: what is left is the rows themselves.  Each fired timer
-- locks and rewrites its timer and its customer, and neither update can
-- be HOT (fired_at and status appear in partial index predicates), so
-- each writes an entry in every other index as well.  On 2 vCPUs that is
-- about 70 microseconds a timer, no more than a function that does nothing
-- but those locks and updates.
--
-- CREATE OR REPLACE keeps the signature and the grants of 0003.

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
             WHERE tm.fired_at IS NULL AND tm.due_at <= v_now
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
               cu.status, cu.request_id AS customer_request_id, cu.msp_id,
               cu.requested_by, cu.licenses, cu.created_at,
               cu.trial_ends_at, cu.traceparent,
               EXISTS (SELECT 1 FROM timers e
                        WHERE e.customer_id = tm.customer_id
                          AND e.fired_at IS NULL
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
    timers_done AS (
        UPDATE timers tm
           SET fired_at = v_now, cancelled = d.is_cancelled
          FROM (SELECT p.id, p.action = 'CANCELLED' AS is_cancelled
                  FROM plan p
                 WHERE p.action <> 'DEFERRED'
                UNION ALL
                SELECT o.id, true
                  FROM timers o
                  JOIN fired_terminations f ON f.customer_id = o.customer_id
                 WHERE o.fired_at IS NULL
                   AND o.id <> ALL (v_ids)) AS d
         WHERE tm.id = d.id AND tm.fired_at IS NULL),
    customers_done AS (
        UPDATE customers cu
           SET status = CASE WHEN a.is_terminated THEN 'TERMINATED'
                             ELSE 'ACTIVE' END,
               billable = NOT a.is_terminated,
               billing_starts_at = CASE WHEN a.is_converted
                                        THEN cu.trial_ends_at
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
    -- mw_ts_to_ms spelled out: extract() of a timestamptz is only stable,
    -- so the immutable function is never inlined, and calling it three
    -- times a row cost more than a tenth of the statement.
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
     ORDER BY p.due_at, p.id;
END
$$;

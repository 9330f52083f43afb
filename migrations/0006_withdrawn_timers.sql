-- mw_fire_due_timers as in 0005_set_based_timers.sql, with two changes so
-- that what a round did is told as it happened:
--   * a fired termination cancels its customer's pending timers that were
--     not claimed with it (not due yet, or beyond the limit): they come
--     back as rows of action WITHDRAWN, so that the caller can count what
--     the round cancelled; they were never claimed and have no event;
--   * a termination of a customer still on trial clears
--     billing_starts_at, set to the trial end at creation: billing never
--     started.  A trial converted before its termination keeps it.
-- The claim, the order and the locks are those of 0005; CREATE OR
-- REPLACE keeps the signature and the grants of 0003.
--
-- Customers terminated on trial before this migration get the same:
-- their conversion timer was cancelled, so billing never started.

UPDATE customers cu
   SET billing_starts_at = NULL
 WHERE cu.status = 'TERMINATED'
   AND cu.account_type = 'TRIAL'
   AND cu.billing_starts_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM timers tm
                WHERE tm.customer_id = cu.customer_id
                  AND tm.kind = 'TRIAL_CONVERSION'
                  AND tm.cancelled);

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
          FROM (SELECT p.id, p.action = 'CANCELLED' AS is_cancelled,
                       true AS is_claimed
                  FROM plan p
                 WHERE p.action <> 'DEFERRED'
                UNION ALL
                SELECT o.id, true, false
                  FROM timers o
                  JOIN fired_terminations f ON f.customer_id = o.customer_id
                 WHERE o.fired_at IS NULL
                   AND o.id <> ALL (v_ids)) AS d
         WHERE tm.id = d.id AND tm.fired_at IS NULL
        RETURNING tm.id, tm.kind, tm.customer_id, tm.due_at, tm.request_id,
                  d.is_claimed),
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
    UNION ALL
    SELECT w.id, 'WITHDRAWN', w.kind, w.customer_id, cu.request_id,
           cu.msp_id, cu.requested_by, cu.licenses,
           (extract(epoch FROM cu.created_at) * 1000)::bigint,
           (extract(epoch FROM cu.trial_ends_at) * 1000)::bigint,
           (extract(epoch FROM w.due_at) * 1000)::bigint, w.request_id,
           cu.traceparent, false
      FROM timers_done w
      JOIN customers cu ON cu.customer_id = w.customer_id
     WHERE NOT w.is_claimed
     -- due_at in milliseconds, then the id: (due_at, id) order.
     ORDER BY 11, 1;
END
$$;

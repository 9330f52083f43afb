-- The lifecycle: timers kept in PostgreSQL, because Kafka has no delayed
-- delivery.  A timer is written in the same transaction as the fact that
-- makes it (the trial customer, the accepted termination) and fired by the
-- scheduler of any replica in the transaction that applies its state
-- change and writes its event to the outbox, so each fires exactly once.
--
-- Invariants kept here:
--   * a customer's timers take effect in (due_at, id) order: a timer is
--     left alone while an earlier one of its customer is pending, so a
--     conversion due before a termination is published before it, and one
--     due after it is cancelled by it;
--   * a customer has at most one timer of each kind (unique index), so a
--     re-run claim cannot schedule anything twice;
--   * "now" is always a parameter (the worker's clock, which tests can
--     move), never the database's now().

CREATE TABLE timers (
    id bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (customer_id),
    kind text NOT NULL
        CHECK (kind IN ('TRIAL_ENDING', 'TRIAL_CONVERSION', 'TERMINATION')),
    due_at timestamptz NOT NULL,
    request_id text, -- the termination's request id
    created_at timestamptz NOT NULL,
    fired_at timestamptz, -- null while pending
    cancelled boolean NOT NULL DEFAULT false
);

CREATE UNIQUE INDEX timers_customer_kind ON timers (customer_id, kind);
-- What the scheduler claims: the pending timers, oldest first.
CREATE INDEX timers_due ON timers (due_at, id) WHERE fired_at IS NULL;
-- A customer's pending timers, for the ordering check and cancellation.
CREATE INDEX timers_customer_pending ON timers (customer_id, due_at, id)
    WHERE fired_at IS NULL;

-- Customers and terminations accepted before this migration get their
-- timers now (the reminder period is not known here: no reminder).
INSERT INTO timers (customer_id, kind, due_at, created_at)
SELECT customer_id, 'TRIAL_CONVERSION', trial_ends_at, created_at
  FROM customers
 WHERE status = 'TRIAL' AND trial_ends_at IS NOT NULL;

INSERT INTO timers (customer_id, kind, due_at, request_id, created_at)
SELECT customer_id, 'TERMINATION', effective_at, request_id, created_at
  FROM terminations
 WHERE applied_at IS NULL
ON CONFLICT (customer_id, kind) DO NOTHING;

-- mw_claim_request gains p_reminder_at: the worker decides whether there
-- is a reminder (MESH_WORKER_TRIAL_REMINDER) and when.
DROP FUNCTION mw_claim_request(text, bytea, boolean, uuid, text, text, text,
                               text, text, text[], text, text, text,
                               integer, text, text, text, boolean, boolean,
                               boolean, boolean, bigint, bigint, text);

-- Claims one CustomerRequested.
--
-- outcome: CREATED (customer and domains written, and for a TRIAL its
-- conversion timer at the trial end and its reminder timer at
-- p_reminder_at when not null), REJECTED (invalid, or a domain is held by
-- a live customer: taken lists those domains and nothing but the request
-- id is kept), DUPLICATE (same id, same payload hash: nothing changes) or
-- CONFLICT (same id, other hash: the conflict is counted, the original
-- outcome stands).
CREATE FUNCTION mw_claim_request(
    p_request_id text,
    p_payload_hash bytea,
    p_is_valid boolean,
    p_customer_id uuid,
    p_msp_id text,
    p_msp_domain text,
    p_requested_by text,
    p_company_name text,
    p_primary_domain text,
    p_additional_domains text[],
    p_mail_platform text,
    p_service text,
    p_account_type text,
    p_licenses integer,
    p_default_admin_email text,
    p_delivery_destination text,
    p_policy_template_id text,
    p_apply_global_rules boolean,
    p_msp_management boolean,
    p_two_factor_required boolean,
    p_monitor_mode boolean,
    p_occurred_at bigint,
    p_trial_ends_at bigint,
    p_traceparent text,
    p_reminder_at bigint,
    OUT outcome text,
    OUT taken text[])
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_occurred timestamptz := mw_ms_to_ts(p_occurred_at);
    v_trial_ends timestamptz := mw_ms_to_ts(p_trial_ends_at);
    v_domains text[];
    v_inserted text[];
BEGIN
    taken := '{}';

    -- The request id first: a racing replica waits here for the winner.
    -- The outcome written is the expected one; a taken domain corrects it.
    INSERT INTO requests AS r (request_id, kind, msp_id, payload_hash,
                               outcome, customer_id, processed_at)
    VALUES (p_request_id, 'customer', p_msp_id, p_payload_hash,
            CASE WHEN p_is_valid THEN 'CREATED' ELSE 'REJECTED' END,
            CASE WHEN p_is_valid THEN p_customer_id END,
            v_occurred)
    ON CONFLICT (request_id) DO NOTHING;

    IF NOT FOUND THEN
        UPDATE requests SET conflicts = conflicts + 1
         WHERE request_id = p_request_id
           AND payload_hash <> p_payload_hash;
        outcome := CASE WHEN FOUND THEN 'CONFLICT' ELSE 'DUPLICATE' END;
        RETURN;
    END IF;

    IF NOT p_is_valid THEN
        outcome := 'REJECTED';
        RETURN;
    END IF;

    -- Primary first, then the additional domains, each once.
    SELECT array_agg(d ORDER BY first_ord) INTO v_domains
      FROM (SELECT d, min(ord) AS first_ord
              FROM unnest(array_prepend(p_primary_domain,
                                        coalesce(p_additional_domains,
                                                 '{}'::text[])))
                   WITH ORDINALITY AS u(d, ord)
             GROUP BY d) AS distinct_domains;

    WITH inserted AS (
        INSERT INTO customer_domains (domain, customer_id, is_primary)
        SELECT d, p_customer_id, d = p_primary_domain
          FROM unnest(v_domains) AS u(d)
        ON CONFLICT (domain) WHERE released_at IS NULL DO NOTHING
        RETURNING domain)
    SELECT coalesce(array_agg(domain), '{}') INTO v_inserted FROM inserted;

    IF cardinality(v_inserted) < cardinality(v_domains) THEN
        SELECT coalesce(array_agg(d ORDER BY ord), '{}') INTO taken
          FROM unnest(v_domains) WITH ORDINALITY AS u(d, ord)
         WHERE d <> ALL (v_inserted);
        DELETE FROM customer_domains
         WHERE customer_id = p_customer_id AND domain = ANY (v_inserted);
        UPDATE requests SET outcome = 'REJECTED', customer_id = NULL
         WHERE request_id = p_request_id;
        outcome := 'REJECTED';
        RETURN;
    END IF;

    INSERT INTO customers (
        customer_id, request_id, msp_id, msp_domain, requested_by,
        company_name, primary_domain, additional_domains, mail_platform,
        service, account_type, licenses, default_admin_email,
        delivery_destination, policy_template_id, apply_global_rules,
        msp_management, two_factor_required, monitor_mode, billable, status,
        created_at, billing_starts_at, trial_ends_at, traceparent)
    VALUES (
        p_customer_id, p_request_id, p_msp_id, p_msp_domain, p_requested_by,
        p_company_name, p_primary_domain,
        coalesce(p_additional_domains, '{}'), p_mail_platform,
        p_service, p_account_type, p_licenses, p_default_admin_email,
        p_delivery_destination, p_policy_template_id, p_apply_global_rules,
        p_msp_management, p_two_factor_required, p_monitor_mode,
        p_account_type = 'BUY_NOW',
        CASE WHEN p_account_type = 'TRIAL' THEN 'TRIAL' ELSE 'ACTIVE' END,
        v_occurred,
        CASE p_account_type
            WHEN 'BUY_NOW' THEN v_occurred
            WHEN 'TRIAL' THEN v_trial_ends
        END,
        CASE WHEN p_account_type = 'TRIAL' THEN v_trial_ends END,
        p_traceparent);

    IF p_account_type = 'TRIAL' THEN
        INSERT INTO timers (customer_id, kind, due_at, created_at)
        VALUES (p_customer_id, 'TRIAL_CONVERSION', v_trial_ends, v_occurred);
        IF p_reminder_at IS NOT NULL THEN
            INSERT INTO timers (customer_id, kind, due_at, created_at)
            VALUES (p_customer_id, 'TRIAL_ENDING', mw_ms_to_ts(p_reminder_at),
                    v_occurred);
        END IF;
        -- Delivered at commit; identical notifications of one transaction
        -- are folded into one.
        PERFORM pg_notify('mw_timers', '');
    END IF;
    outcome := 'CREATED';
END
$$;

-- mw_claim_termination now also schedules the termination's timer.
--
-- outcome: SCHEDULED (a termination row and its TERMINATION timer are
-- written; effective_at is the requested time, or the processing time
-- when null or past; was_trial tells whether the customer was on trial),
-- REJECTED with code UNKNOWN_CUSTOMER, NOT_CUSTOMER_OWNER or
-- ALREADY_TERMINATED (also when another termination is scheduled: the
-- first one stands), or DUPLICATE / CONFLICT as for mw_claim_request.
CREATE OR REPLACE FUNCTION mw_claim_termination(
    p_request_id text,
    p_payload_hash bytea,
    p_msp_id text,
    p_customer_id text,
    p_effective_at bigint,
    p_occurred_at bigint,
    p_traceparent text,
    OUT outcome text,
    OUT code text,
    OUT effective_at bigint,
    OUT was_trial boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_occurred timestamptz := mw_ms_to_ts(p_occurred_at);
    v_effective timestamptz;
    v_customer uuid;
    v_msp text;
    v_status text;
BEGIN
    INSERT INTO requests (request_id, kind, msp_id, payload_hash, outcome,
                          processed_at)
    VALUES (p_request_id, 'termination', p_msp_id, p_payload_hash,
            'REJECTED', v_occurred)
    ON CONFLICT (request_id) DO NOTHING;

    IF NOT FOUND THEN
        UPDATE requests SET conflicts = conflicts + 1
         WHERE request_id = p_request_id
           AND payload_hash <> p_payload_hash;
        outcome := CASE WHEN FOUND THEN 'CONFLICT' ELSE 'DUPLICATE' END;
        RETURN;
    END IF;

    outcome := 'REJECTED';

    -- An id that is not a UUID names no customer (and must not fail the
    -- batch with a cast error).  The row lock orders concurrent
    -- terminations of one customer, so only the first is scheduled.
    IF p_customer_id ~* '^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$' THEN
        SELECT c.customer_id, c.msp_id, c.status
          INTO v_customer, v_msp, v_status
          FROM customers c
         WHERE c.customer_id = p_customer_id::uuid
           FOR NO KEY UPDATE;
    END IF;

    IF v_customer IS NULL THEN
        code := 'UNKNOWN_CUSTOMER';
        RETURN;
    END IF;
    IF v_msp IS DISTINCT FROM p_msp_id THEN
        code := 'NOT_CUSTOMER_OWNER';
        RETURN;
    END IF;
    IF v_status = 'TERMINATED'
       OR EXISTS (SELECT 1 FROM terminations t
                   WHERE t.customer_id = v_customer) THEN
        code := 'ALREADY_TERMINATED';
        RETURN;
    END IF;

    v_effective := greatest(coalesce(mw_ms_to_ts(p_effective_at), v_occurred),
                            v_occurred);
    INSERT INTO terminations (request_id, customer_id, msp_id, effective_at,
                              created_at, traceparent)
    VALUES (p_request_id, v_customer, p_msp_id, v_effective, v_occurred,
            p_traceparent);
    INSERT INTO timers (customer_id, kind, due_at, request_id, created_at)
    VALUES (v_customer, 'TERMINATION', v_effective, p_request_id, v_occurred)
    ON CONFLICT (customer_id, kind) DO NOTHING;
    UPDATE requests SET outcome = 'SCHEDULED', customer_id = v_customer
     WHERE request_id = p_request_id;
    PERFORM pg_notify('mw_timers', '');

    outcome := 'SCHEDULED';
    effective_at := mw_ts_to_ms(v_effective);
    was_trial := v_status = 'TRIAL';
END
$$;

-- Claims up to p_limit due timers (due_at <= p_now, oldest first) that no
-- other transaction holds, applies each, and returns one row for each
-- claimed timer with what its event needs.  Runs inside the scheduler's
-- transaction, which also writes the events to the outbox: the state
-- change, the event and the timer's fired_at commit together or not at
-- all.
--
-- Per timer, in (due_at, id) order, action is:
--   * DEFERRED when an earlier timer of the same customer is still
--     pending (held by another replica): it stays pending for a later
--     round, so that the customer's events keep their order;
--   * CANCELLED when it no longer applies (a trial timer of a customer no
--     longer on trial, a termination of a terminated customer): fired_at
--     is set with cancelled = true, and there is no event;
--   * FIRED otherwise:
--       TRIAL_ENDING changes nothing but the timer;
--       TRIAL_CONVERSION makes the customer ACTIVE and billable from the
--       trial end (not from now);
--       TERMINATION makes the customer TERMINATED at the effective time,
--       releases its domains (at p_now, so that they can be taken again),
--       marks the termination applied and cancels every other pending
--       timer of the customer.
--
-- Customers are locked in customer_id order before any is changed, so two
-- schedulers never wait for each other in a cycle.
CREATE FUNCTION mw_fire_due_timers(p_now bigint, p_limit integer)
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
    t record;
    c record;
BEGIN
    SELECT array_agg(d.id ORDER BY d.due_at, d.id) INTO v_ids
      FROM (SELECT tm.id, tm.due_at
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
      WHERE cu.customer_id IN (SELECT tm.customer_id FROM timers tm
                                WHERE tm.id = ANY (v_ids))
      ORDER BY cu.customer_id
        FOR NO KEY UPDATE;

    FOR t IN SELECT tm.* FROM timers tm
              WHERE tm.id = ANY (v_ids)
              ORDER BY tm.due_at, tm.id
    LOOP
        SELECT cu.* INTO c FROM customers cu
         WHERE cu.customer_id = t.customer_id;

        timer_id := t.id;
        kind := t.kind;
        customer_id := t.customer_id;
        customer_request_id := c.request_id;
        msp_id := c.msp_id;
        requested_by := c.requested_by;
        licenses := c.licenses;
        created_at := mw_ts_to_ms(c.created_at);
        trial_ends_at := mw_ts_to_ms(c.trial_ends_at);
        due_at := mw_ts_to_ms(t.due_at);
        request_id := t.request_id;
        traceparent := c.traceparent;
        was_trial := c.status = 'TRIAL';

        IF EXISTS (SELECT 1 FROM timers tm
                    WHERE tm.id = t.id AND tm.fired_at IS NOT NULL) THEN
            -- Cancelled by an earlier timer of this batch.
            action := 'CANCELLED';
        ELSIF EXISTS (SELECT 1 FROM timers tm
                       WHERE tm.customer_id = t.customer_id
                         AND tm.fired_at IS NULL
                         AND (tm.due_at, tm.id) < (t.due_at, t.id)) THEN
            action := 'DEFERRED';
        ELSIF (t.kind IN ('TRIAL_ENDING', 'TRIAL_CONVERSION')
               AND c.status <> 'TRIAL')
              OR (t.kind = 'TERMINATION' AND c.status = 'TERMINATED') THEN
            action := 'CANCELLED';
            UPDATE timers SET fired_at = v_now, cancelled = true
             WHERE id = t.id;
        ELSE
            action := 'FIRED';
            IF t.kind = 'TRIAL_CONVERSION' THEN
                UPDATE customers
                   SET status = 'ACTIVE', billable = true,
                       billing_starts_at = c.trial_ends_at
                 WHERE customers.customer_id = t.customer_id;
            ELSIF t.kind = 'TERMINATION' THEN
                UPDATE customers
                   SET status = 'TERMINATED', billable = false,
                       terminated_at = t.due_at
                 WHERE customers.customer_id = t.customer_id;
                UPDATE customer_domains SET released_at = v_now
                 WHERE customer_domains.customer_id = t.customer_id
                   AND released_at IS NULL;
                UPDATE terminations SET applied_at = v_now
                 WHERE terminations.request_id = t.request_id
                RETURNING terminations.traceparent INTO traceparent;
                UPDATE timers SET fired_at = v_now, cancelled = true
                 WHERE timers.customer_id = t.customer_id
                   AND fired_at IS NULL AND id <> t.id;
            END IF;
            UPDATE timers SET fired_at = v_now WHERE id = t.id;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            GRANT SELECT, INSERT, UPDATE, DELETE ON timers TO mesh_worker;
            GRANT USAGE, SELECT ON SEQUENCE timers_id_seq TO mesh_worker;
            GRANT EXECUTE ON FUNCTION
                mw_claim_request(text, bytea, boolean, uuid, text, text, text,
                                 text, text, text[], text, text, text,
                                 integer, text, text, text, boolean, boolean,
                                 boolean, boolean, bigint, bigint, text,
                                 bigint),
                mw_fire_due_timers(bigint, integer)
               TO mesh_worker;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'privileges not granted to mesh_worker: %',
                             SQLERRM;
        END;
    END IF;
END
$$;

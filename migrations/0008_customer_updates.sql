-- Changes to a customer after its creation (CustomerUpdateRequested).
--
-- An update is claimed in two calls inside the worker's batch
-- transaction, in the order of the batch, because the rules that judge it
-- are the worker's (worker/rules_update.c):
--   * mw_load_update records the request id (DUPLICATE and CONFLICT as for
--     every request), locks the customer's row and returns it, with the
--     added domains another live customer holds;
--   * mw_apply_update, when the worker accepted it, writes the resulting
--     state, the domains, the change history and, for a trial bought
--     early, cancels the reminder and the conversion.
-- The row lock (FOR NO KEY UPDATE, as terminations and timers take it)
-- orders everything that happens to one customer, across replicas.
--
-- A domain an update adds goes through the partial unique index that
-- decides races between creations: when another replica took it between
-- the load and the apply, the apply fails with serialization_failure, the
-- worker runs its batch again, and the load then sees the domain taken.
-- A removed domain is released (released_at), as a terminated customer's
-- are; adding it again later replaces the released row.
--
-- licenses_observed_at is the observed_at of the licenses last applied,
-- so that an older license sync is refused (STALE_UPDATE) and never
-- overwrites a newer one.

ALTER TABLE requests DROP CONSTRAINT requests_kind_check;
ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('customer', 'termination', 'update'));
ALTER TABLE requests DROP CONSTRAINT requests_outcome_check;
ALTER TABLE requests ADD CONSTRAINT requests_outcome_check
    CHECK (outcome IN ('CREATED', 'REJECTED', 'SCHEDULED', 'UPDATED'));

ALTER TABLE customers ADD COLUMN licenses_observed_at timestamptz;

-- Every accepted update, for operators (mesh-worker customers show).
CREATE TABLE customer_changes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    request_id text PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (customer_id),
    source text NOT NULL CHECK (source IN ('MSP', 'M365_SYNC')),
    requested_by text NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    changes jsonb NOT NULL
);

-- id orders the changes of one customer as they were applied.
CREATE INDEX customer_changes_customer ON customer_changes (customer_id, id);

-- Records an update's request id and loads its customer, locked.
--
-- outcome: NEW (recorded as REJECTED until mw_apply_update says
-- otherwise), DUPLICATE or CONFLICT.  For NEW, is_found tells whether the
-- customer exists; its columns follow (times in epoch milliseconds),
-- is_terminated is true when it is terminated or its termination is due
-- at p_now, and taken lists the domains of p_add_domains that another
-- live customer holds.
CREATE FUNCTION mw_load_update(
    p_request_id text,
    p_payload_hash bytea,
    p_msp_id text,
    p_customer_id text,
    p_add_domains text[],
    p_now bigint,
    OUT outcome text,
    OUT is_found boolean,
    OUT msp_id text,
    OUT msp_domain text,
    OUT service text,
    OUT account_type text,
    OUT status text,
    OUT billable boolean,
    OUT licenses integer,
    OUT licenses_observed_at bigint,
    OUT monitor_mode boolean,
    OUT two_factor_required boolean,
    OUT msp_management boolean,
    OUT apply_global_rules boolean,
    OUT delivery_destination text,
    OUT policy_template_id text,
    OUT primary_domain text,
    OUT additional_domains text[],
    OUT created_at bigint,
    OUT is_terminated boolean,
    OUT taken text[])
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := mw_ms_to_ts(p_now);
    v_customer uuid;
BEGIN
    INSERT INTO requests (request_id, kind, msp_id, payload_hash, outcome,
                          processed_at)
    VALUES (p_request_id, 'update', p_msp_id, p_payload_hash, 'REJECTED',
            v_now)
    ON CONFLICT (request_id) DO NOTHING;

    IF NOT FOUND THEN
        UPDATE requests SET conflicts = conflicts + 1
         WHERE request_id = p_request_id
           AND payload_hash <> p_payload_hash;
        outcome := CASE WHEN FOUND THEN 'CONFLICT' ELSE 'DUPLICATE' END;
        RETURN;
    END IF;

    outcome := 'NEW';
    is_found := false;
    -- An id that is not a UUID names no customer (and must not fail the
    -- batch with a cast error).
    IF p_customer_id !~* '^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$' THEN
        RETURN;
    END IF;

    SELECT c.customer_id, c.msp_id, c.msp_domain, c.service, c.account_type,
           c.status, c.billable, c.licenses,
           mw_ts_to_ms(c.licenses_observed_at), c.monitor_mode,
           c.two_factor_required, c.msp_management, c.apply_global_rules,
           c.delivery_destination, c.policy_template_id, c.primary_domain,
           c.additional_domains, mw_ts_to_ms(c.created_at)
      INTO v_customer, msp_id, msp_domain, service, account_type, status,
           billable, licenses, licenses_observed_at, monitor_mode,
           two_factor_required, msp_management, apply_global_rules,
           delivery_destination, policy_template_id, primary_domain,
           additional_domains, created_at
      FROM customers c
     WHERE c.customer_id = p_customer_id::uuid
       FOR NO KEY UPDATE;

    IF v_customer IS NULL THEN
        RETURN;
    END IF;
    is_found := true;
    is_terminated := status = 'TERMINATED'
        OR EXISTS (SELECT 1 FROM terminations t
                    WHERE t.customer_id = v_customer
                      AND t.effective_at <= v_now);
    SELECT coalesce(array_agg(d.domain ORDER BY d.domain), '{}') INTO taken
      FROM customer_domains d
     WHERE d.domain = ANY (coalesce(p_add_domains, '{}'))
       AND d.released_at IS NULL
       AND d.customer_id <> v_customer;
END
$$;

-- Writes an accepted update: the customer's resulting state (each
-- column given), the domains added and removed, the change history, and
-- for a trial bought early (p_is_bought) the end of the trial now, with
-- its reminder and conversion cancelled.  The caller holds the row lock
-- of mw_load_update.
CREATE FUNCTION mw_apply_update(
    p_request_id text,
    p_customer_id uuid,
    p_source text,
    p_requested_by text,
    p_licenses integer,
    p_licenses_observed_at bigint,
    p_monitor_mode boolean,
    p_two_factor_required boolean,
    p_msp_management boolean,
    p_apply_global_rules boolean,
    p_delivery_destination text,
    p_policy_template_id text,
    p_additional_domains text[],
    p_add_domains text[],
    p_remove_domains text[],
    p_account_type text,
    p_is_bought boolean,
    p_observed_at bigint,
    p_changes jsonb,
    p_now bigint)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := mw_ms_to_ts(p_now);
    v_added integer;
BEGIN
    UPDATE customer_domains
       SET released_at = v_now
     WHERE customer_id = p_customer_id
       AND domain = ANY (p_remove_domains)
       AND released_at IS NULL;
    DELETE FROM customer_domains
     WHERE customer_id = p_customer_id
       AND domain = ANY (p_add_domains)
       AND released_at IS NOT NULL;
    WITH added AS (
        INSERT INTO customer_domains (domain, customer_id, is_primary)
        SELECT d, p_customer_id, false
          FROM unnest(p_add_domains) AS u(d)
         ORDER BY d
        ON CONFLICT (domain) WHERE released_at IS NULL DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO v_added FROM added;
    IF v_added < cardinality(p_add_domains) THEN
        RAISE EXCEPTION 'a domain added by update % was taken meanwhile',
                        p_request_id
              USING ERRCODE = 'serialization_failure';
    END IF;

    UPDATE customers
       SET licenses = p_licenses,
           licenses_observed_at = mw_ms_to_ts(p_licenses_observed_at),
           monitor_mode = p_monitor_mode,
           two_factor_required = p_two_factor_required,
           msp_management = p_msp_management,
           apply_global_rules = p_apply_global_rules,
           delivery_destination = p_delivery_destination,
           policy_template_id = p_policy_template_id,
           additional_domains = p_additional_domains,
           account_type = p_account_type,
           status = CASE WHEN p_is_bought THEN 'ACTIVE' ELSE status END,
           billable = billable OR p_is_bought,
           billing_starts_at = CASE WHEN p_is_bought THEN v_now
                                    ELSE billing_starts_at END,
           trial_ends_at = CASE WHEN p_is_bought THEN v_now
                                ELSE trial_ends_at END
     WHERE customer_id = p_customer_id;

    IF p_is_bought THEN
        PERFORM mw_cancel_pending_timers(
            p_customer_id, ARRAY['TRIAL_ENDING', 'TRIAL_CONVERSION'], p_now);
    END IF;

    INSERT INTO customer_changes (request_id, customer_id, source,
                                  requested_by, occurred_at, observed_at,
                                  changes)
    VALUES (p_request_id, p_customer_id, p_source, p_requested_by, v_now,
            mw_ms_to_ts(p_observed_at), p_changes);
    UPDATE requests SET outcome = 'UPDATED', customer_id = p_customer_id
     WHERE request_id = p_request_id;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            GRANT SELECT, INSERT, UPDATE, DELETE ON customer_changes
               TO mesh_worker;
            GRANT EXECUTE ON FUNCTION
                mw_load_update(text, bytea, text, text, text[], bigint),
                mw_apply_update(text, uuid, text, text, integer, bigint,
                                boolean, boolean, boolean, boolean, text,
                                text, text[], text[], text[], text, boolean,
                                bigint, jsonb, bigint)
               TO mesh_worker;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'privileges not granted to mesh_worker: %',
                             SQLERRM;
        END;
    END IF;
END
$$;

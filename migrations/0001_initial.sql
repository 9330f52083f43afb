-- The provisioning schema: customers and the domains they hold, the
-- idempotency record of every request, accepted terminations, and the
-- transactional outbox read by the relay.
--
-- Invariants kept by the database rather than by the worker:
--   * a request id is recorded once (requests primary key);
--   * a domain is held by at most one live customer (partial unique index
--     on customer_domains where released_at is null);
--   * an event id is written to the outbox once (unique event_id).
--
-- The claim functions below run one request each inside the worker's batch
-- transaction.  They use INSERT ... ON CONFLICT only, so that replicas
-- racing for the same request id or domain wait for the winner and then
-- see it, instead of failing with a unique violation.

CREATE TABLE customers (
    customer_id uuid PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    msp_id text NOT NULL,
    msp_domain text NOT NULL,
    requested_by text NOT NULL,
    company_name text NOT NULL,
    primary_domain text NOT NULL,
    additional_domains text[] NOT NULL DEFAULT '{}',
    mail_platform text NOT NULL,
    service text NOT NULL,
    account_type text NOT NULL
        CHECK (account_type IN ('BUY_NOW', 'TRIAL', 'NFR')),
    licenses integer NOT NULL,
    default_admin_email text NOT NULL,
    delivery_destination text,
    policy_template_id text,
    apply_global_rules boolean NOT NULL,
    msp_management boolean NOT NULL,
    two_factor_required boolean NOT NULL,
    monitor_mode boolean NOT NULL,
    billable boolean NOT NULL,
    status text NOT NULL
        CHECK (status IN ('ACTIVE', 'TRIAL', 'TERMINATED')),
    created_at timestamptz NOT NULL,
    billing_starts_at timestamptz,
    trial_ends_at timestamptz,
    terminated_at timestamptz,
    traceparent text
);

CREATE INDEX customers_msp_id ON customers (msp_id);
-- The lifecycle scheduler looks for trials that end.
CREATE INDEX customers_trial_ends_at ON customers (trial_ends_at)
    WHERE status = 'TRIAL';

-- The foreign key is checked at commit, so that a request's domains can be
-- claimed before its customer row is written (and nothing is written for
-- the customer when a domain is taken).
CREATE TABLE customer_domains (
    domain text NOT NULL,
    customer_id uuid NOT NULL REFERENCES customers (customer_id)
        DEFERRABLE INITIALLY DEFERRED,
    is_primary boolean NOT NULL,
    released_at timestamptz,
    PRIMARY KEY (customer_id, domain)
);

-- One live holder per domain, across all MSPs.  A terminated customer's
-- rows get released_at and stop counting.
CREATE UNIQUE INDEX customer_domains_live ON customer_domains (domain)
    WHERE released_at IS NULL;

CREATE TABLE requests (
    request_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('customer', 'termination')),
    msp_id text,
    payload_hash bytea NOT NULL,
    outcome text NOT NULL
        CHECK (outcome IN ('CREATED', 'REJECTED', 'SCHEDULED')),
    customer_id uuid,
    processed_at timestamptz NOT NULL,
    conflicts integer NOT NULL DEFAULT 0
);

CREATE TABLE terminations (
    request_id text PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (customer_id),
    msp_id text NOT NULL,
    effective_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    applied_at timestamptz,
    traceparent text
);

CREATE INDEX terminations_customer_id ON terminations (customer_id);
-- The lifecycle scheduler looks for terminations that are due.
CREATE INDEX terminations_due ON terminations (effective_at)
    WHERE applied_at IS NULL;

-- stream: 0 = customer.events, 1 = the DLQ.  event_id is null for DLQ
-- rows, which carry the consumed bytes unchanged.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    stream smallint NOT NULL CHECK (stream IN (0, 1)),
    event_id uuid UNIQUE,
    key bytea,
    headers bytea,
    payload bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Epoch milliseconds (the worker's clock) to timestamptz; null stays null.
CREATE FUNCTION mw_ms_to_ts(ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT timestamptz 'epoch' + ms * interval '1 millisecond' $$;

CREATE FUNCTION mw_ts_to_ms(ts timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM ts) * 1000)::bigint $$;

-- Claims one CustomerRequested.
--
-- outcome: CREATED (customer and domains written), REJECTED (invalid, or a
-- domain is held by a live customer: taken lists those domains and nothing
-- but the request id is kept), DUPLICATE (same id, same payload hash:
-- nothing changes) or CONFLICT (same id, other hash: the conflict is
-- counted, the original outcome stands).
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
    outcome := 'CREATED';
END
$$;

-- Claims one CustomerTerminationRequested.
--
-- outcome: SCHEDULED (a termination row is written; effective_at is the
-- requested time, or the processing time when null or past; was_trial
-- tells whether the customer was on trial), REJECTED with code
-- UNKNOWN_CUSTOMER, NOT_CUSTOMER_OWNER or ALREADY_TERMINATED, or
-- DUPLICATE / CONFLICT as for mw_claim_request.
CREATE FUNCTION mw_claim_termination(
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
    UPDATE requests SET outcome = 'SCHEDULED', customer_id = v_customer
     WHERE request_id = p_request_id;

    outcome := 'SCHEDULED';
    effective_at := mw_ts_to_ms(v_effective);
    was_trial := v_status = 'TRIAL';
END
$$;

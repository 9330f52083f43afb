-- Requests are claimed a run at a time.
--
-- mw_claim_request claimed one request per call with five statements, each
-- paying PostgreSQL's executor start-up: most of the database's time per
-- request.  mw_claim_requests takes a run of consecutive CustomerRequested
-- of a batch as arrays (element i of every array belongs to request i) and
-- claims them with a fixed number of statements, with the outcomes that
-- calling mw_claim_request for each, in order, gave:
--   * the first occurrence of a request id records it; a later one, in
--     this call or before it, is DUPLICATE, or CONFLICT (counted) when its
--     payload hash differs from the recorded one;
--   * a valid new request gets all its domains or none: when a live
--     customer holds any it is REJECTED, and taken lists those, in the
--     order of the request (primary first);
--   * requests of one call that want the same domain are claimed one
--     after the other, in order, as before: one rejected for another
--     domain does not keep the shared one from a later request.  Such
--     requests are rare and cost a few statements each.
-- Request ids and domains are written in sorted order, so that replicas
-- racing over the same ones lock them in one order and do not deadlock.
--
-- The worker sends each run of requests between terminations as one call,
-- so that a termination still sees exactly the customers created before it.

DROP FUNCTION mw_claim_request(text, bytea, boolean, uuid, text, text, text,
                               text, text, text[], text, text, text,
                               integer, text, text, text, boolean, boolean,
                               boolean, boolean, bigint, bigint, text,
                               bigint);

-- The same instant, but immutable all through, so that PostgreSQL inlines
-- it into the claim's statements instead of calling it per row (adding an
-- interval to a timestamptz is only stable).  Exact to the millisecond:
-- a double holds epoch seconds to well under a microsecond until 2200.
CREATE OR REPLACE FUNCTION mw_ms_to_ts(ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT to_timestamp(ms::double precision / 1000) $$;

-- p_additional_domains holds one text[] literal per request ('{}' or null
-- when none), because PostgreSQL arrays cannot be ragged.  Times are epoch
-- milliseconds.  The worker also lists the domains each valid request
-- wants, primary first and each once (p_domain, with the request's
-- position in p_domain_item, grouped by request in order), and the valid
-- requests that want a domain another request of the call also wants
-- (p_shared, ascending).  Returns one row per request: its position (from 1), its
-- outcome (CREATED, REJECTED, DUPLICATE or CONFLICT) and the taken domains
-- ('{}' unless a domain made it REJECTED).
CREATE FUNCTION mw_claim_requests(
    p_request_id text[],
    p_payload_hash bytea[],
    p_is_valid boolean[],
    p_customer_id uuid[],
    p_msp_id text[],
    p_msp_domain text[],
    p_requested_by text[],
    p_company_name text[],
    p_primary_domain text[],
    p_additional_domains text[],
    p_mail_platform text[],
    p_service text[],
    p_account_type text[],
    p_licenses integer[],
    p_default_admin_email text[],
    p_delivery_destination text[],
    p_policy_template_id text[],
    p_apply_global_rules boolean[],
    p_msp_management boolean[],
    p_two_factor_required boolean[],
    p_monitor_mode boolean[],
    p_occurred_at bigint[],
    p_trial_ends_at bigint[],
    p_traceparent text[],
    p_reminder_at bigint[],
    p_domain_item integer[],
    p_domain text[],
    p_shared integer[])
RETURNS TABLE (item_no integer, item_outcome text, item_taken text[])
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_count integer := coalesce(cardinality(p_request_id), 0);
    v_firsts integer[];    -- the first request of each id, in id order
    v_new integer[];       -- requests whose id this call recorded
    v_conflicts integer[]; -- later requests with other content
    v_lost_item integer[]; -- the taken domains of rejected requests
    v_lost_dom text[];
    v_rejected integer[];
    v_created integer[];
    v_item integer;
    v_mine text[];
    v_inserted text[];
BEGIN
    -- The request ids first: a racing replica waits here for the winner.
    -- The outcome written is the expected one; a taken domain corrects it.
    -- A plain INSERT, the common case, costs a third less than one with
    -- ON CONFLICT; when an id is recorded already, that one runs instead.
    -- Rows go in id order (v_firsts: the first position of each id).
    v_firsts := ARRAY(SELECT DISTINCT ON (u.rid) u.i::integer
                        FROM unnest(p_request_id) WITH ORDINALITY AS u(rid, i)
                       ORDER BY u.rid, u.i);
    BEGIN
        INSERT INTO requests (request_id, kind, msp_id, payload_hash,
                              outcome, customer_id, processed_at)
        SELECT p_request_id[f.i], 'customer', p_msp_id[f.i],
               p_payload_hash[f.i],
               CASE WHEN p_is_valid[f.i] THEN 'CREATED' ELSE 'REJECTED' END,
               CASE WHEN p_is_valid[f.i] THEN p_customer_id[f.i] END,
               mw_ms_to_ts(p_occurred_at[f.i])
          FROM unnest(v_firsts) AS f(i);
        v_new := ARRAY(SELECT f.i FROM unnest(v_firsts) AS f(i) ORDER BY f.i);
    EXCEPTION
        WHEN unique_violation THEN
            WITH recorded AS (
                INSERT INTO requests (request_id, kind, msp_id, payload_hash,
                                      outcome, customer_id, processed_at)
                SELECT p_request_id[f.i], 'customer', p_msp_id[f.i],
                       p_payload_hash[f.i],
                       CASE WHEN p_is_valid[f.i] THEN 'CREATED'
                            ELSE 'REJECTED' END,
                       CASE WHEN p_is_valid[f.i] THEN p_customer_id[f.i] END,
                       mw_ms_to_ts(p_occurred_at[f.i])
                  FROM unnest(v_firsts) AS f(i)
                ON CONFLICT (request_id) DO NOTHING
                RETURNING request_id)
            SELECT coalesce(array_agg(f.i ORDER BY f.i), '{}') INTO v_new
              FROM unnest(v_firsts) AS f(i)
              JOIN recorded r ON r.request_id = p_request_id[f.i];
    END;

    v_conflicts := '{}';
    IF cardinality(v_new) < v_count THEN
        WITH later AS (
            SELECT u.rid, u.h, u.i::integer AS i
              FROM unnest(p_request_id, p_payload_hash)
                   WITH ORDINALITY AS u(rid, h, i)
              LEFT JOIN unnest(v_new) AS nw(i) ON nw.i = u.i
             WHERE nw.i IS NULL),
        differing AS (
            SELECT l.i, l.rid
              FROM later l JOIN requests r ON r.request_id = l.rid
             WHERE r.payload_hash <> l.h),
        counted AS (
            UPDATE requests r SET conflicts = r.conflicts + d.n
              FROM (SELECT rid, count(*) AS n FROM differing GROUP BY rid) d
             WHERE r.request_id = d.rid)
        SELECT coalesce(array_agg(i), '{}') INTO v_conflicts FROM differing;
    END IF;

    -- Requests that share no domain with another: all in one statement,
    -- again a plain INSERT first.
    v_lost_item := '{}';
    v_lost_dom := '{}';
    BEGIN
        INSERT INTO customer_domains (domain, customer_id, is_primary)
        SELECT x.d, p_customer_id[x.i], x.d = p_primary_domain[x.i]
          FROM unnest(p_domain_item, p_domain) AS x(i, d)
          JOIN unnest(v_new) AS nw(i) ON nw.i = x.i
         WHERE x.i <> ALL (p_shared)
         ORDER BY x.d;
    EXCEPTION
        WHEN unique_violation THEN
            WITH got AS (
                INSERT INTO customer_domains (domain, customer_id, is_primary)
                SELECT x.d, p_customer_id[x.i], x.d = p_primary_domain[x.i]
                  FROM unnest(p_domain_item, p_domain) AS x(i, d)
                  JOIN unnest(v_new) AS nw(i) ON nw.i = x.i
                 WHERE x.i <> ALL (p_shared)
                 ORDER BY x.d
                ON CONFLICT (domain) WHERE released_at IS NULL DO NOTHING
                RETURNING domain)
            SELECT coalesce(array_agg(x.i ORDER BY x.k), '{}'),
                   coalesce(array_agg(x.d ORDER BY x.k), '{}')
              INTO v_lost_item, v_lost_dom
              FROM unnest(p_domain_item, p_domain) WITH ORDINALITY AS x(i, d, k)
              JOIN unnest(v_new) AS nw(i) ON nw.i = x.i
              LEFT JOIN got ON got.domain = x.d
             WHERE x.i <> ALL (p_shared) AND got.domain IS NULL;
    END;

    -- Requests that share a domain: one after the other, in order.
    FOREACH v_item IN ARRAY p_shared LOOP
        CONTINUE WHEN v_item <> ALL (v_new);
        v_mine := ARRAY(SELECT x.d
                          FROM unnest(p_domain_item, p_domain)
                               WITH ORDINALITY AS x(i, d, k)
                         WHERE x.i = v_item
                         ORDER BY x.k);
        WITH got AS (
            INSERT INTO customer_domains (domain, customer_id, is_primary)
            SELECT m.d, p_customer_id[v_item], m.d = p_primary_domain[v_item]
              FROM unnest(v_mine) AS m(d)
             ORDER BY m.d
            ON CONFLICT (domain) WHERE released_at IS NULL DO NOTHING
            RETURNING domain)
        SELECT coalesce(array_agg(domain), '{}') INTO v_inserted FROM got;
        IF cardinality(v_inserted) < cardinality(v_mine) THEN
            SELECT v_lost_item || array_agg(v_item ORDER BY m.pos),
                   v_lost_dom || array_agg(m.d ORDER BY m.pos)
              INTO v_lost_item, v_lost_dom
              FROM unnest(v_mine) WITH ORDINALITY AS m(d, pos)
             WHERE m.d <> ALL (v_inserted);
            DELETE FROM customer_domains
             WHERE customer_id = p_customer_id[v_item]
               AND domain = ANY (v_inserted);
        END IF;
    END LOOP;

    v_rejected := ARRAY(SELECT DISTINCT r.i FROM unnest(v_lost_item) AS r(i)
                         ORDER BY r.i);
    IF cardinality(v_rejected) > 0 THEN
        DELETE FROM customer_domains cd
         USING unnest(v_rejected) AS r(i)
         WHERE cd.customer_id = p_customer_id[r.i];
        UPDATE requests rq SET outcome = 'REJECTED', customer_id = NULL
          FROM unnest(v_rejected) AS r(i)
         WHERE rq.request_id = p_request_id[r.i];
    END IF;

    v_created := ARRAY(SELECT w.i FROM unnest(v_new) AS w(i)
                        WHERE p_is_valid[w.i] AND w.i <> ALL (v_rejected)
                        ORDER BY w.i);

    INSERT INTO customers (
        customer_id, request_id, msp_id, msp_domain, requested_by,
        company_name, primary_domain, additional_domains, mail_platform,
        service, account_type, licenses, default_admin_email,
        delivery_destination, policy_template_id, apply_global_rules,
        msp_management, two_factor_required, monitor_mode, billable, status,
        created_at, billing_starts_at, trial_ends_at, traceparent)
    SELECT p_customer_id[c.i], p_request_id[c.i], p_msp_id[c.i],
           p_msp_domain[c.i], p_requested_by[c.i], p_company_name[c.i],
           p_primary_domain[c.i],
           coalesce(p_additional_domains[c.i]::text[], '{}'),
           p_mail_platform[c.i], p_service[c.i], p_account_type[c.i],
           p_licenses[c.i], p_default_admin_email[c.i],
           p_delivery_destination[c.i], p_policy_template_id[c.i],
           p_apply_global_rules[c.i], p_msp_management[c.i],
           p_two_factor_required[c.i], p_monitor_mode[c.i],
           p_account_type[c.i] = 'BUY_NOW',
           CASE WHEN p_account_type[c.i] = 'TRIAL' THEN 'TRIAL'
                ELSE 'ACTIVE' END,
           mw_ms_to_ts(p_occurred_at[c.i]),
           CASE p_account_type[c.i]
               WHEN 'BUY_NOW' THEN mw_ms_to_ts(p_occurred_at[c.i])
               WHEN 'TRIAL' THEN mw_ms_to_ts(p_trial_ends_at[c.i])
           END,
           CASE WHEN p_account_type[c.i] = 'TRIAL'
                THEN mw_ms_to_ts(p_trial_ends_at[c.i]) END,
           p_traceparent[c.i]
      FROM unnest(v_created) AS c(i);

    -- A trial's conversion, and its reminder when the worker set one.
    INSERT INTO timers (customer_id, kind, due_at, created_at)
    SELECT p_customer_id[c.i], k.kind, k.due_at,
           mw_ms_to_ts(p_occurred_at[c.i])
      FROM unnest(v_created) AS c(i)
     CROSS JOIN LATERAL (
           VALUES ('TRIAL_CONVERSION', mw_ms_to_ts(p_trial_ends_at[c.i])),
                  ('TRIAL_ENDING', mw_ms_to_ts(p_reminder_at[c.i])))
           AS k(kind, due_at)
     WHERE p_account_type[c.i] = 'TRIAL' AND k.due_at IS NOT NULL;
    IF FOUND THEN
        -- Delivered at commit; identical notifications of one
        -- transaction are folded into one.
        PERFORM pg_notify('mw_timers', '');
    END IF;

    RETURN QUERY
    SELECT u.i::integer,
           CASE WHEN nw.i IS NULL THEN
                     CASE WHEN cf.i IS NULL THEN 'DUPLICATE'
                          ELSE 'CONFLICT' END
                WHEN NOT p_is_valid[u.i] OR lost.i IS NOT NULL
                     THEN 'REJECTED'
                ELSE 'CREATED' END,
           coalesce(lost.taken, '{}'::text[])
      FROM generate_series(1, v_count) AS u(i)
      LEFT JOIN unnest(v_new) AS nw(i) ON nw.i = u.i
      LEFT JOIN unnest(v_conflicts) AS cf(i) ON cf.i = u.i
      LEFT JOIN (SELECT l.i, array_agg(l.d ORDER BY l.k) AS taken
                   FROM unnest(v_lost_item, v_lost_dom)
                        WITH ORDINALITY AS l(i, d, k)
                  GROUP BY l.i) AS lost ON lost.i = u.i
     ORDER BY u.i;
END
$$;

-- Writes a batch's outbox rows (element i of every array is row i, in
-- order).  A plain INSERT first, as in the claim: an event id written
-- already (a batch re-run after a crash) is rare, and only then does the
-- INSERT that skips it run.
CREATE FUNCTION mw_write_outbox(
    p_stream smallint[],
    p_event_id text[],
    p_key bytea[],
    p_headers bytea[],
    p_payload bytea[])
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO outbox (stream, event_id, key, headers, payload)
    SELECT * FROM unnest(p_stream, p_event_id::uuid[], p_key, p_headers,
                         p_payload);
EXCEPTION
    WHEN unique_violation THEN
        INSERT INTO outbox (stream, event_id, key, headers, payload)
        SELECT * FROM unnest(p_stream, p_event_id::uuid[], p_key, p_headers,
                             p_payload)
        ON CONFLICT (event_id) DO NOTHING;
END
$$;

-- The outbox is a queue: the relay deletes its rows within moments of
-- their commit.  Vacuum it every few thousand dead rows, not when a fifth
-- of the table is dead, so that reading the next rows stays cheap.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0,
                        autovacuum_vacuum_threshold = 5000);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            GRANT EXECUTE ON FUNCTION
                mw_claim_requests(text[], bytea[], boolean[], uuid[], text[],
                                  text[], text[], text[], text[], text[],
                                  text[], text[], text[], integer[], text[],
                                  text[], text[], boolean[], boolean[],
                                  boolean[], boolean[], bigint[], bigint[],
                                  text[], bigint[], integer[], text[],
                                  integer[]),
                mw_write_outbox(smallint[], text[], bytea[], bytea[], bytea[])
               TO mesh_worker;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'privileges not granted to mesh_worker: %',
                             SQLERRM;
        END;
    END IF;
END
$$;

-- A least-privilege role for the worker: read and write the tables, call
-- the claim functions, no DDL.  It cannot log in; an operator grants it to
-- the login role the worker uses:  GRANT mesh_worker TO <login role>;
-- and runs migrations as the owner.
--
-- Roles belong to the whole cluster, and on managed servers the migrating
-- user often may not create them.  So this migration never fails: without
-- the privilege it only leaves a notice, and a role made by another
-- database's migration (even concurrently) is reused.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            CREATE ROLE mesh_worker NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege OR duplicate_object THEN
                RAISE NOTICE 'role mesh_worker not created: %', SQLERRM;
        END;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mesh_worker') THEN
        BEGIN
            GRANT SELECT, INSERT, UPDATE, DELETE
               ON customers, customer_domains, requests, terminations, outbox
               TO mesh_worker;
            GRANT SELECT ON schema_migrations TO mesh_worker;
            GRANT USAGE, SELECT ON SEQUENCE outbox_id_seq TO mesh_worker;
            GRANT EXECUTE ON FUNCTION
                mw_ms_to_ts(bigint),
                mw_ts_to_ms(timestamptz),
                mw_claim_request(text, bytea, boolean, uuid, text, text, text,
                                 text, text, text[], text, text, text,
                                 integer, text, text, text, boolean, boolean,
                                 boolean, boolean, bigint, bigint, text),
                mw_claim_termination(text, bytea, text, text, bigint, bigint,
                                     text)
               TO mesh_worker;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'privileges not granted to mesh_worker: %',
                             SQLERRM;
        END;
    END IF;
END
$$;

/*
 * PostgreSQL storage: the connection, how libpq's errors become a struct
 * mw_error, and the migrations.  The store is the only module that speaks
 * SQL; it knows nothing of Kafka or Avro, and decides no business rule the
 * database can decide (domain uniqueness, idempotency and the account
 * arithmetic live in the claim functions of the migrations).  Its other
 * files each hold one concern: store_claim.c the batch claim,
 * store_outbox.c the outbox, store_timers.c the lifecycle timers; this one
 * holds what they share (store_internal.h).
 *
 * Invariant: when the connection is in doubt (a pipeline broken half way,
 * a lost connection) it is dropped, which rolls back on the server, and
 * the next call reconnects; a transaction open on a dropped connection is
 * never continued on a new one.
 */
#include "store_internal.h"

#include "embedded_files.h"
#include "mw.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Server notices (CREATE ... IF NOT EXISTS, migrations) are not errors. */
static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Forgets the connection; the server rolls back what was open. */
void store_drop_connection(struct store *store)
{
    PQfinish(store->conn);
    store->conn = NULL;
    store->is_prepared = false;
    store->is_fetch_set = false;
    store->is_listening = false;
    store->is_listening_timers = false;
    store->is_leader = false;
    store->in_batch = false;
}

/* Copies text without its trailing newlines, which libpq adds. */
static void copy_trimmed(char *dst, size_t size, const char *src)
{
    size_t len;

    snprintf(dst, size, "%s", src ? src : "");
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == '\r'))
        dst[--len] = '\0';
}

static bool is_retriable_state(const char *sqlstate)
{
    if (sqlstate == NULL)
        return false;
    return strncmp(sqlstate, "08", 2) == 0 ||
           strcmp(sqlstate, "57P01") == 0 || /* admin_shutdown */
           strcmp(sqlstate, "57P02") == 0 || /* crash_shutdown */
           strcmp(sqlstate, "57P03") == 0 || /* cannot_connect_now */
           strcmp(sqlstate, "40001") == 0 || /* serialization_failure */
           strcmp(sqlstate, "40P01") == 0;   /* deadlock_detected */
}

bool store_is_serialization_state(const char *sqlstate)
{
    return sqlstate != NULL &&
           (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/*
 * Fills err with what (the primary message) and the server's SQLSTATE and
 * message from res, or the connection's message when res has none.  A
 * lost connection is retriable and is dropped.
 */
void store_set_error(struct store *store, struct mw_error *err,
                     const char *what, const PGresult *res)
{
    const char *sqlstate = NULL, *primary = NULL, *detail = NULL;
    char text[400];
    bool is_lost;

    if (res != NULL) {
        sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    }
    if (primary == NULL)
        primary = store->conn ? PQerrorMessage(store->conn) : "no connection";
    copy_trimmed(text, sizeof(text), primary);
    is_lost = store->conn == NULL || PQstatus(store->conn) != CONNECTION_OK;
    mw_error_set(err, MW_ERR_DATABASE, is_lost || is_retriable_state(sqlstate),
                 "%s", what);
    if (sqlstate != NULL && detail != NULL)
        mw_error_detail(err, "SQLSTATE %s: %s (%s)", sqlstate, text, detail);
    else if (sqlstate != NULL)
        mw_error_detail(err, "SQLSTATE %s: %s", sqlstate, text);
    else
        mw_error_detail(err, "%s", text[0] ? text : "connection lost");
    if (is_lost)
        store_drop_connection(store);
}

/*
 * Fills err for a connection that failed with libpq's message text.  A
 * server certificate that does not verify, or a CA file that cannot be
 * read, will not heal by waiting: those are permanent configuration
 * errors, so that start-up stops at once.  Everything else (refused,
 * timed out, a standby when read-write is wanted) is retriable.
 *
 * Known limit: libpq gives no code for failures on the client side, so
 * they are recognised by its English messages; with libpq's translations
 * installed and a non-English locale they fall back to the retriable
 * case and start-up gives up after MESH_WORKER_DATABASE_WAIT instead.
 */
static void set_connect_error(struct mw_error *err, const char *text)
{
    if (strstr(text, "does not match host name") != NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "PostgreSQL server certificate does not match the "
                     "host name in MESH_WORKER_DATABASE_URL");
        mw_error_detail(err, "%s", text);
        mw_error_hint(err, "Connect to a host name or address listed in the "
                           "certificate's subjectAltName.");
    } else if (strstr(text, "certificate verify failed") != NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "PostgreSQL server certificate verification failed "
                     "for MESH_WORKER_DATABASE_URL");
        mw_error_detail(err, "%s", text);
        mw_error_hint(err, "Set sslrootcert= in MESH_WORKER_DATABASE_URL to "
                           "the CA certificate that signed the server's "
                           "certificate.");
    } else if (strstr(text, "root certificate file") != NULL ||
               strstr(text, "could not read root certificate") != NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "cannot read the CA certificate for "
                     "MESH_WORKER_DATABASE_URL");
        /* Only the first line: libpq's second suggests no verification. */
        mw_error_detail(err, "%.*s", (int)strcspn(text, "\n"), text);
        mw_error_hint(err, "Set sslrootcert= in MESH_WORKER_DATABASE_URL to "
                           "a readable PEM file.");
    } else {
        mw_error_set(err, MW_ERR_DATABASE, true,
                     "could not connect to PostgreSQL");
        mw_error_detail(err, "%s", text);
        mw_error_hint(err, "Check MESH_WORKER_DATABASE_URL and the server.");
    }
}

static int connect_db(struct store *store, struct mw_error *err)
{
    char text[400];

    store->conn = PQconnectdb(store->conninfo);
    if (store->conn == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, true,
                     "could not connect to PostgreSQL");
        mw_error_detail(err, "out of memory");
        return -1;
    }
    if (PQstatus(store->conn) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password. */
        copy_trimmed(text, sizeof(text), PQerrorMessage(store->conn));
        set_connect_error(err, text);
        store_drop_connection(store);
        return -1;
    }
    PQsetNoticeProcessor(store->conn, ignore_notice, NULL);
    if (PQsetClientEncoding(store->conn, "UTF8") != 0) {
        store_set_error(store, err, "could not set the client encoding", NULL);
        store_drop_connection(store);
        return -1;
    }
    return 0;
}

/* Reconnects when the last call lost the connection. */
int store_ensure_connected(struct store *store, struct mw_error *err)
{
    if (store->conn != NULL && PQstatus(store->conn) == CONNECTION_OK)
        return 0;
    store_drop_connection(store);
    return connect_db(store, err);
}

struct store *store_new(const char *conninfo, struct mw_error *err)
{
    struct store *store = calloc(1, sizeof(*store));

    if (store != NULL)
        store->conninfo = strdup(conninfo);
    if (store == NULL || store->conninfo == NULL) {
        free(store);
        mw_error_no_memory(err);
        return NULL;
    }
    store->seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)store;
    store->copy_min_run = STORE_COPY_MIN_RUN;
    if (connect_db(store, err) != 0) {
        store_destroy(store);
        return NULL;
    }
    return store;
}

void store_set_copy_min_run(struct store *store, size_t count)
{
    store->copy_min_run = count;
}

long store_copied_runs(const struct store *store)
{
    return store->copied_runs;
}

void store_destroy(struct store *store)
{
    if (store == NULL)
        return;
    PQfinish(store->conn);
    store_claim_free(store);
    store_copy_free(store);
    free(store->conninfo);
    free(store);
}

/* Runs one statement with text parameters and discards its result. */
int store_exec(struct store *store, const char *sql, int nparams,
               const char *const *values, const char *what,
               struct mw_error *err)
{
    PGresult *res =
        PQexecParams(store->conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);

    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        store_set_error(store, err, what, res);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

int store_ping(struct store *store, struct mw_error *err)
{
    static const char sql_ping[] = "SELECT 1";

    if (store_ensure_connected(store, err) != 0)
        return -1;
    return store_exec(store, sql_ping, 0, NULL, "could not ping PostgreSQL",
                      err);
}

/* ---- migrations ---- */

/* Reads the version from a name such as "0001_initial.sql"; -1 if none. */
static int migration_version(const char *name)
{
    long version = 0;
    const char *p = name;

    while (*p >= '0' && *p <= '9' && version < 1000000)
        version = version * 10 + (*p++ - '0');
    if (p == name || *p != '_')
        return -1;
    return (int)version;
}

static bool is_applied(const int *versions, int count, int version)
{
    for (int i = 0; i < count; i++) {
        if (versions[i] == version)
            return true;
    }
    return false;
}

/*
 * One transaction per migration: its statements and the row recording it
 * commit together, so a migration is either wholly applied and recorded
 * or not at all.
 */
static int apply_migration(struct store *store,
                           const struct mw_embedded_file *file, int version,
                           struct mw_error *err)
{
    static const char sql_record[] =
        "INSERT INTO schema_migrations (version, name, applied_at) "
        "VALUES ($1, $2, now())";
    char version_text[16];
    const char *values[2] = {version_text, file->name};
    char what[200];
    PGresult *res;

    snprintf(what, sizeof(what), "could not apply migration %s", file->name);
    snprintf(version_text, sizeof(version_text), "%d", version);
    if (store_exec(store, "BEGIN", 0, NULL, what, err) != 0)
        return -1;
    /* A migration is several statements: the simple protocol runs them. */
    res = PQexec(store->conn, file->text);
    if (PQresultStatus(res) != PGRES_COMMAND_OK &&
        PQresultStatus(res) != PGRES_TUPLES_OK) {
        store_set_error(store, err, what, res);
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (store_exec(store, sql_record, 2, values, what, err) != 0)
        goto fail;
    if (store_exec(store, "COMMIT", 0, NULL, what, err) != 0)
        goto fail;
    return 0;

fail:
    if (store->conn != NULL) {
        res = PQexec(store->conn, "ROLLBACK");
        PQclear(res);
    }
    return -1;
}

int store_migrate(struct store *store, struct mw_error *err)
{
    static const char sql_lock[] = "SELECT pg_advisory_lock($1, $2)";
    static const char sql_unlock[] = "SELECT pg_advisory_unlock($1, $2)";
    static const char sql_create[] =
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())";
    static const char sql_applied[] = "SELECT version FROM schema_migrations";
    const char *lock_key[2] = {STORE_LOCK_CLASS, STORE_LOCK_MIGRATIONS};
    int *versions = NULL;
    int applied = 0, last = -1, rc = -1;
    PGresult *res;

    if (store->in_batch) {
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "cannot migrate inside a batch transaction");
        return -1;
    }
    if (store_ensure_connected(store, err) != 0)
        return -1;
    /* Replicas starting together queue here; the first applies. */
    if (store_exec(store, sql_lock, 2, lock_key,
                   "could not lock the migrations", err) != 0)
        return -1;
    if (store_exec(store, sql_create, 0, NULL,
                   "could not create table schema_migrations", err) != 0)
        goto done;

    res = PQexecParams(store->conn, sql_applied, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        store_set_error(store, err, "could not read schema_migrations", res);
        PQclear(res);
        goto done;
    }
    applied = PQntuples(res);
    versions = calloc((size_t)applied + 1, sizeof(*versions));
    if (versions == NULL) {
        PQclear(res);
        mw_error_no_memory(err);
        goto done;
    }
    for (int i = 0; i < applied; i++)
        versions[i] = atoi(PQgetvalue(res, i, 0));
    PQclear(res);

    for (const struct mw_embedded_file *f = mw_embedded_files; f->kind; f++) {
        int version;

        if (strcmp(f->kind, "migration") != 0)
            continue;
        version = migration_version(f->name);
        if (version <= last) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "invalid migration file name \"%s\"", f->name);
            mw_error_detail(
                err, "Names start with a unique, increasing number and \"_\".");
            goto done;
        }
        last = version;
        if (is_applied(versions, applied, version))
            continue;
        if (apply_migration(store, f, version, err) != 0)
            goto done;
    }
    rc = 0;

done:
    free(versions);
    /* A lost connection has released the lock already. */
    if (store->conn != NULL) {
        res = PQexecParams(store->conn, sql_unlock, 2, NULL, lock_key, NULL,
                           NULL, 0);
        PQclear(res);
    }
    return rc;
}

/*
 * Whether this login may apply migrations: it owns schema_migrations (or
 * shares its owner's privileges), or the table is missing and it may
 * create tables.  A login holding only mesh_worker may not.
 */
static const char sql_schema_owner[] =
    "SELECT to_regclass('schema_migrations') IS NOT NULL,"
    " CASE WHEN to_regclass('schema_migrations') IS NULL"
    " THEN coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)"
    " ELSE pg_has_role((SELECT relowner FROM pg_class"
    " WHERE oid = to_regclass('schema_migrations')), 'USAGE') END,"
    " current_user";

int store_schema_check(struct store *store, bool *may_migrate,
                       struct mw_error *err)
{
    static const char sql_applied[] = "SELECT version FROM schema_migrations";
    const struct mw_embedded_file *first = NULL;
    char user[128];
    bool has_table;
    int *versions = NULL, applied = 0, missing = 0;
    PGresult *res;

    *may_migrate = false;
    if (store_ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_schema_owner, 0, NULL, NULL, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not read the database schema", res);
        PQclear(res);
        return -1;
    }
    has_table = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    *may_migrate = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    snprintf(user, sizeof(user), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    if (has_table) {
        res = PQexecParams(store->conn, sql_applied, 0, NULL, NULL, NULL, NULL,
                           0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            store_set_error(store, err, "could not read schema_migrations",
                            res);
            PQclear(res);
            return -1;
        }
        applied = PQntuples(res);
        versions = calloc((size_t)applied + 1, sizeof(*versions));
        if (versions == NULL) {
            PQclear(res);
            mw_error_no_memory(err);
            return -1;
        }
        for (int i = 0; i < applied; i++)
            versions[i] = atoi(PQgetvalue(res, i, 0));
        PQclear(res);
    }
    for (const struct mw_embedded_file *f = mw_embedded_files; f->kind; f++) {
        if (strcmp(f->kind, "migration") != 0 ||
            is_applied(versions, applied, migration_version(f->name)))
            continue;
        if (first == NULL)
            first = f;
        missing++;
    }
    free(versions);
    if (missing == 0)
        return 0;
    mw_error_set(err, MW_ERR_DATABASE, false,
                 "database schema is not up to date");
    mw_error_detail(err,
                    "%d migration%s not applied, the first \"%s\"; role "
                    "\"%s\" %s apply them.",
                    missing, missing == 1 ? "" : "s", first->name, user,
                    *may_migrate ? "may" : "may not");
    mw_error_hint(err, "Run \"mesh-worker migrate\" with the schema owner's "
                       "login in MESH_WORKER_DATABASE_URL, then start the "
                       "worker again.");
    return 1;
}

/*
 * What the server says of its own replication: the standbys streaming
 * from it, whether commits wait for one of them, and the settings that
 * decide it.  pg_stat_replication shows every role its rows (details
 * only to pg_read_all_stats), so a mesh_worker login can count them.
 */
static const char sql_replication[] =
    "SELECT (SELECT count(*) FROM pg_stat_replication),"
    " current_setting('synchronous_standby_names'),"
    " current_setting('synchronous_commit')";

int store_replication_check(struct store *store,
                            struct store_replication *replication,
                            struct mw_error *err)
{
    PGresult *res;
    const char *names, *commit;

    memset(replication, 0, sizeof(*replication));
    if (store_ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_replication, 0, NULL, NULL, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not read the replication settings",
                        res);
        PQclear(res);
        return -1;
    }
    replication->standbys = atoll(PQgetvalue(res, 0, 0));
    names = PQgetvalue(res, 0, 1);
    commit = PQgetvalue(res, 0, 2);
    snprintf(replication->standby_names, sizeof(replication->standby_names),
             "%s", names);
    snprintf(replication->synchronous_commit,
             sizeof(replication->synchronous_commit), "%s", commit);
    replication->is_synchronous = names[0] != '\0' &&
                                  strcmp(commit, "off") != 0 &&
                                  strcmp(commit, "local") != 0;
    PQclear(res);
    return 0;
}

/* ---- what the other files share ---- */

/* Prepares one list of statements on the connection; 0, or -1 with err. */
static int prepare_list(struct store *store,
                        const struct store_statement *statements, size_t count,
                        struct mw_error *err)
{
    for (size_t i = 0; i < count; i++) {
        PGresult *res =
            PQprepare(store->conn, statements[i].name, statements[i].sql,
                      statements[i].nparams, NULL);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            store_set_error(store, err, "could not prepare statements", res);
            mw_error_hint(err, "Run \"mesh-worker migrate\" first.");
            PQclear(res);
            return -1;
        }
        PQclear(res);
    }
    return 0;
}

int store_prepare_statements(struct store *store, struct mw_error *err)
{
    if (store->is_prepared)
        return 0;
    if (prepare_list(store, store_claim_statements, store_claim_statement_count,
                     err) != 0 ||
        prepare_list(store, store_outbox_statements,
                     store_outbox_statement_count, err) != 0)
        return -1;
    store->is_prepared = true;
    return 0;
}

/*
 * Reads the result of the next query of a pipeline, and the NULL that ends
 * it.  Returns NULL when the connection failed; the caller then drops it.
 */
PGresult *store_pipeline_next(struct store *store)
{
    PGresult *res = PQgetResult(store->conn);
    PGresult *end;

    if (res == NULL)
        return NULL;
    end = PQgetResult(store->conn);
    if (end != NULL) {
        /* More than one result for one query: only COPY does that. */
        PQclear(end);
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Queues a statement without parameters in the pipeline; 0 or -1. */
int store_send_command(struct store *store, const char *sql)
{
    int sent =
        PQsendQueryParams(store->conn, sql, 0, NULL, NULL, NULL, NULL, 0);

    return sent == 1 ? 0 : -1;
}

/* Reads the sync that ends a pipeline and leaves pipeline mode. */
int store_pipeline_end(struct store *store)
{
    PGresult *res = PQgetResult(store->conn);
    bool is_sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;

    PQclear(res);
    if (!is_sync || PQexitPipelineMode(store->conn) != 1)
        return -1;
    return 0;
}

/* True when s is well-formed UTF-8, which PostgreSQL insists on. */
static bool is_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        int n;
        unsigned int c;

        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xE0) == 0xC0) {
            n = 1;
            c = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            n = 2;
            c = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            n = 3;
            c = *p & 0x07;
        } else {
            return false;
        }
        p++;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (*p & 0x3F);
        }
        if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) ||
            (n == 3 && (c < 0x10000 || c > 0x10FFFF)) ||
            (c >= 0xD800 && c <= 0xDFFF))
            return false;
    }
    return true;
}

/* A text parameter that must not fail the batch: NULL when unusable. */
const char *store_safe_text(const char *s, size_t max_bytes)
{
    if (s == NULL || strlen(s) > max_bytes || !is_utf8(s))
        return NULL;
    return s;
}

/* Rolls back the open transaction; a failure drops the connection. */
void store_rollback(struct store *store)
{
    PGresult *res;

    store->in_batch = false;
    if (store->conn == NULL)
        return;
    if (PQpipelineStatus(store->conn) != PQ_PIPELINE_OFF) {
        store_drop_connection(store);
        return;
    }
    res = PQexec(store->conn, "ROLLBACK");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        store_drop_connection(store);
    PQclear(res);
}

/* Sleeps 5 to 5 + 20 * attempt milliseconds, so that retries spread out. */
static void backoff(struct store *store, int attempt)
{
    mw_sleep_ms(5 + rand_r(&store->seed) % (20 * attempt));
}

bool store_may_retry(struct store *store, int attempt, bool is_retry,
                     const char *what, struct mw_error *err)
{
    if (!is_retry)
        return false;
    if (attempt >= STORE_MAX_ATTEMPTS) {
        mw_error_hint(err, "The %s failed %d times on deadlocks; retry it.",
                      what, STORE_MAX_ATTEMPTS);
        return false;
    }
    backoff(store, attempt);
    return true;
}

/* Consumes every queued notification; true when there was one. */
static bool drain_notifies(struct store *store)
{
    PGnotify *notify;
    bool is_notified = false;

    while ((notify = PQnotifies(store->conn)) != NULL) {
        is_notified = true;
        PQfreemem(notify);
    }
    return is_notified;
}

/*
 * LISTENs on a channel once per connection (*is_listening), then waits up
 * to timeout_ms for a notification.  Returns 1, 0 on timeout, or -1.
 */
int store_wait_notify(struct store *store, const char *sql_listen,
                      bool *is_listening, int timeout_ms, const char *what,
                      struct mw_error *err)
{
    int64_t deadline = mw_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    if (store_ensure_connected(store, err) != 0)
        return -1;
    if (!*is_listening) {
        if (store_exec(store, sql_listen, 0, NULL, what, err) != 0)
            return -1;
        *is_listening = true;
    }
    for (;;) {
        struct pollfd pfd;
        int64_t left;
        int ready;

        if (PQconsumeInput(store->conn) != 1) {
            store_set_error(store, err, what, NULL);
            err->retriable = true;
            store_drop_connection(store);
            return -1;
        }
        if (drain_notifies(store))
            return 1;
        left = deadline - mw_monotonic_ms();
        if (left <= 0)
            return 0;
        pfd.fd = PQsocket(store->conn);
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (pfd.fd < 0) {
            store_set_error(store, err, what, NULL);
            err->retriable = true;
            store_drop_connection(store);
            return -1;
        }
        ready = poll(&pfd, 1, (int)left);
        if (ready < 0 && errno != EINTR) {
            mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
            mw_error_detail(err, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

/*
 * PostgreSQL storage: migrations, the batch transaction that claims
 * requests and writes their outbox rows, and the outbox queries of the
 * relay.  This is the only module that speaks SQL; it knows nothing of
 * Kafka or Avro, and decides no business rule the database can decide
 * (domain uniqueness, idempotency and the account arithmetic live in the
 * claim functions of migrations/0001_initial.sql).
 *
 * Invariant: a batch is one transaction, opened by store_batch_claim and
 * ended by store_batch_finish (commit) or store_batch_abort; nothing of a
 * batch is ever committed without its outbox rows.  When the connection is
 * in doubt (a pipeline broken half way, a lost connection) it is dropped,
 * which rolls back on the server, and the next call reconnects; a batch
 * open on a dropped connection is never continued on a new one.
 */
#include "store.h"
#include "embedded_files.h"
#include "ids.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Advisory lock keys (classid, objid): 'mw' and a number per purpose.
 * Other modules' keys belong here too, so that they never collide.
 */
#define LOCK_CLASS "28023"
#define LOCK_MIGRATIONS "1"
#define LOCK_RELAY "2"

/* Attempts of a batch that fails with 40001 or 40P01. */
#define CLAIM_MAX_ATTEMPTS 5

#define OUTBOX_CHANNEL "mw_outbox"
/* Notified by the claim functions when they write a timer. */
#define TIMERS_CHANNEL "mw_timers"

/*
 * Longest request id sent to the database, in bytes.  Valid ids have at
 * most MW_MAX_ID code points; an invalid one may be anything, and a key
 * beyond a B-tree page would fail the whole batch.
 */
#define MAX_KEY_BYTES (4 * MW_MAX_ID)

/*
 * Parameters of mw_claim_requests: one array per request column, then the
 * domains wanted (request, domain) and the requests sharing one.
 */
#define REQUEST_COLUMNS 25
#define CLAIM_REQUESTS_PARAMS (REQUEST_COLUMNS + 3)

/*
 * A text[] parameter in PostgreSQL's text format, built element by
 * element.  A store keeps its buffers from batch to batch.
 */
struct text_array {
    char *buf;
    size_t len, cap;
    size_t count;
    bool is_oom;
};

struct store {
    PGconn *conn; /* NULL after a drop: reconnect on the next call */
    char *conninfo;
    bool is_prepared;  /* the named statements exist on conn */
    bool is_listening; /* LISTEN done on conn */
    bool is_listening_timers; /* LISTEN mw_timers done on conn */
    bool is_leader;    /* the relay lock is held by conn */
    bool in_batch;     /* a batch transaction is open on conn */
    bool is_fetch_set; /* the relay's fetch plan is set on conn */
    unsigned int seed; /* retry jitter */
    struct text_array columns[CLAIM_REQUESTS_PARAMS]; /* claim parameters */
};

/* Server notices (CREATE ... IF NOT EXISTS, migrations) are not errors. */
static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Forgets the connection; the server rolls back what was open. */
static void drop_connection(struct store *store)
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

static bool is_serialization_state(const char *sqlstate)
{
    return sqlstate != NULL &&
           (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/*
 * Fills err with what (the primary message) and the server's SQLSTATE and
 * message from res, or the connection's message when res has none.  A
 * lost connection is retriable and is dropped.
 */
static void set_error(struct store *store, struct mw_error *err,
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
        drop_connection(store);
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
        drop_connection(store);
        return -1;
    }
    PQsetNoticeProcessor(store->conn, ignore_notice, NULL);
    if (PQsetClientEncoding(store->conn, "UTF8") != 0) {
        set_error(store, err, "could not set the client encoding", NULL);
        drop_connection(store);
        return -1;
    }
    return 0;
}

/* Reconnects when the last call lost the connection. */
static int ensure_connected(struct store *store, struct mw_error *err)
{
    if (store->conn != NULL && PQstatus(store->conn) == CONNECTION_OK)
        return 0;
    drop_connection(store);
    return connect_db(store, err);
}

struct store *store_new(const char *conninfo, struct mw_error *err)
{
    struct store *store = calloc(1, sizeof(*store));

    if (store == NULL || (store->conninfo = strdup(conninfo)) == NULL) {
        free(store);
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return NULL;
    }
    store->seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)store;
    if (connect_db(store, err) != 0) {
        store_destroy(store);
        return NULL;
    }
    return store;
}

void store_destroy(struct store *store)
{
    if (store == NULL)
        return;
    PQfinish(store->conn);
    for (int i = 0; i < CLAIM_REQUESTS_PARAMS; i++)
        free(store->columns[i].buf);
    free(store->conninfo);
    free(store);
}

/* Runs one statement with text parameters and discards its result. */
static int exec_params(struct store *store, const char *sql, int nparams,
                       const char *const *values, const char *what,
                       struct mw_error *err)
{
    PGresult *res =
        PQexecParams(store->conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);

    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        set_error(store, err, what, res);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

int store_ping(struct store *store, struct mw_error *err)
{
    static const char sql_ping[] = "SELECT 1";

    if (ensure_connected(store, err) != 0)
        return -1;
    return exec_params(store, sql_ping, 0, NULL, "could not ping PostgreSQL",
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
    if (exec_params(store, "BEGIN", 0, NULL, what, err) != 0)
        return -1;
    /* A migration is several statements: the simple protocol runs them. */
    res = PQexec(store->conn, file->text);
    if (PQresultStatus(res) != PGRES_COMMAND_OK &&
        PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_error(store, err, what, res);
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (exec_params(store, sql_record, 2, values, what, err) != 0)
        goto fail;
    if (exec_params(store, "COMMIT", 0, NULL, what, err) != 0)
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
    const char *lock_key[2] = {LOCK_CLASS, LOCK_MIGRATIONS};
    int *versions = NULL;
    int applied = 0, last = -1, rc = -1;
    PGresult *res;

    if (store->in_batch) {
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "cannot migrate inside a batch transaction");
        return -1;
    }
    if (ensure_connected(store, err) != 0)
        return -1;
    /* Replicas starting together queue here; the first applies. */
    if (exec_params(store, sql_lock, 2, lock_key,
                    "could not lock the migrations", err) != 0)
        return -1;
    if (exec_params(store, sql_create, 0, NULL,
                    "could not create table schema_migrations", err) != 0)
        goto done;

    res = PQexecParams(store->conn, sql_applied, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_error(store, err, "could not read schema_migrations", res);
        PQclear(res);
        goto done;
    }
    applied = PQntuples(res);
    versions = calloc((size_t)applied + 1, sizeof(*versions));
    if (versions == NULL) {
        PQclear(res);
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
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
    if (ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_schema_owner, 0, NULL, NULL, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        set_error(store, err, "could not read the database schema", res);
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
            set_error(store, err, "could not read schema_migrations", res);
            PQclear(res);
            return -1;
        }
        applied = PQntuples(res);
        versions = calloc((size_t)applied + 1, sizeof(*versions));
        if (versions == NULL) {
            PQclear(res);
            mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
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
    if (ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_replication, 0, NULL, NULL, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        set_error(store, err, "could not read the replication settings", res);
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
    replication->is_synchronous =
        names[0] != '\0' && strcmp(commit, "off") != 0 &&
        strcmp(commit, "local") != 0;
    PQclear(res);
    return 0;
}

/* ---- the batch transaction ---- */

/*
 * A run of consecutive requests of a batch in one statement: the claim is
 * set-based (migrations/0004_batch_claim.sql), so its cost hardly grows
 * with the number of requests.
 */
static const char stmt_claim_requests[] = "mw_claim_requests";
static const char sql_claim_requests[] =
    "SELECT item_no, item_outcome, item_taken FROM mw_claim_requests("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
    "$16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)";

static const char stmt_claim_termination[] = "mw_claim_termination";
static const char sql_claim_termination[] =
    "SELECT outcome, code, effective_at, was_trial "
    "FROM mw_claim_termination($1, $2, $3, $4, $5, $6, $7)";
#define CLAIM_TERMINATION_PARAMS 7

/*
 * All outbox rows of a batch in one call (mw_write_outbox, in
 * migrations/0004_batch_claim.sql): a row each costs PostgreSQL an executor
 * start-up, which was a third of its time per request.  unnest zips the
 * arrays in order, so ids still follow the order of the rows.
 */
static const char stmt_outbox_insert[] = "mw_outbox_insert";
static const char sql_outbox_insert[] =
    "SELECT mw_write_outbox($1, $2, $3, $4, $5)";
#define OUTBOX_INSERT_PARAMS 5

/*
 * Prepares the batch statements once per connection.  Needs the schema,
 * so it runs at the first batch rather than at connect.
 */
static int prepare_statements(struct store *store, struct mw_error *err)
{
    static const struct {
        const char *name, *sql;
        int nparams;
    } statements[] = {
        {stmt_claim_requests, sql_claim_requests, CLAIM_REQUESTS_PARAMS},
        {stmt_claim_termination, sql_claim_termination,
         CLAIM_TERMINATION_PARAMS},
        {stmt_outbox_insert, sql_outbox_insert, OUTBOX_INSERT_PARAMS},
    };

    if (store->is_prepared)
        return 0;
    for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
        PGresult *res =
            PQprepare(store->conn, statements[i].name, statements[i].sql,
                      statements[i].nparams, NULL);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            set_error(store, err, "could not prepare statements", res);
            mw_error_hint(err, "Run \"mesh-worker migrate\" first.");
            PQclear(res);
            return -1;
        }
        PQclear(res);
    }
    store->is_prepared = true;
    return 0;
}

/*
 * Reads the result of the next query of a pipeline, and the NULL that ends
 * it.  Returns NULL when the connection failed; the caller then drops it.
 */
static PGresult *pipeline_next(struct store *store)
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
static int send_command(struct store *store, const char *sql)
{
    int sent =
        PQsendQueryParams(store->conn, sql, 0, NULL, NULL, NULL, NULL, 0);

    return sent == 1 ? 0 : -1;
}

/* Reads the sync that ends a pipeline and leaves pipeline mode. */
static int pipeline_end(struct store *store)
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
static const char *safe_text(const char *s, size_t max_bytes)
{
    if (s == NULL || strlen(s) > max_bytes || !is_utf8(s))
        return NULL;
    return s;
}

static const char *enum_name(const char *const *names, int count, int value)
{
    return value >= 0 && value < count ? names[value] : NULL;
}

/*
 * Writes s at p as a quoted element of a text[] literal (at most
 * 2 * strlen(s) + 2 bytes); returns the end.
 */
static char *put_quoted(char *p, const char *s)
{
    *p++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    return p;
}

/* Writes a text[] literal of strs, every element quoted, into arena. */
static char *array_literal(struct mw_arena *arena, const char *const *strs,
                           size_t count)
{
    size_t len = 3;
    char *buf, *p;

    for (size_t i = 0; i < count; i++)
        len += 2 * strlen(strs[i]) + 3;
    buf = arena_alloc(arena, len);
    if (buf == NULL)
        return NULL;
    p = buf;
    *p++ = '{';
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            *p++ = ',';
        p = put_quoted(p, strs[i]);
    }
    *p++ = '}';
    *p = '\0';
    return buf;
}

/*
 * Parses a text[] in PostgreSQL's output format into an arena array.
 * NULL elements are skipped.  Returns 0, or -1 when out of memory or
 * malformed.
 */
static int parse_array(struct mw_arena *arena, const char *text,
                       const char ***strs, size_t *count)
{
    size_t max = 1, n = 0, len = strlen(text);
    const char **out;
    char *buf;
    const char *p = text;

    *strs = NULL;
    *count = 0;
    if (len < 2 || text[0] != '{' || text[len - 1] != '}')
        return -1;
    if (len == 2)
        return 0;
    for (const char *q = text; *q; q++)
        max += *q == ',';
    out = arena_alloc(arena, max * sizeof(*out));
    buf = arena_alloc(arena, len);
    if (out == NULL || buf == NULL)
        return -1;
    p++;
    while (*p != '}' && *p != '\0') {
        char *start = buf;
        bool is_quoted = *p == '"';

        if (is_quoted) {
            for (p++; *p != '"'; p++) {
                if (*p == '\\')
                    p++;
                if (*p == '\0')
                    return -1;
                *buf++ = *p;
            }
            p++;
        } else {
            while (*p != ',' && *p != '}' && *p != '\0')
                *buf++ = *p++;
        }
        *buf++ = '\0';
        if (is_quoted || strcmp(start, "NULL") != 0)
            out[n++] = start;
        if (*p == ',')
            p++;
    }
    *strs = out;
    *count = n;
    return 0;
}

/* The request id of a claimed item, or NULL for DLQ items. */
static const char *item_request_id(const struct store_item *item)
{
    if (item->kind == STORE_ITEM_REQUEST && item->request != NULL)
        return item->request->request_id;
    if (item->kind == STORE_ITEM_TERMINATION && item->termination != NULL)
        return item->termination->request_id;
    return NULL;
}

/* Empties a; the next element is the first of a new array. */
static void text_array_reset(struct text_array *a)
{
    a->len = 0;
    a->count = 0;
    a->is_oom = false;
}

static bool text_array_reserve(struct text_array *a, size_t more)
{
    size_t cap = a->cap > 0 ? a->cap : 4096;
    char *buf;

    if (a->is_oom)
        return false;
    if (a->len + more <= a->cap)
        return true;
    while (cap < a->len + more)
        cap *= 2;
    buf = realloc(a->buf, cap);
    if (buf == NULL) {
        a->is_oom = true;
        return false;
    }
    a->buf = buf;
    a->cap = cap;
    return true;
}

/* Appends one element: NULL is SQL null, anything else is quoted. */
static void text_array_put(struct text_array *a, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (!text_array_reserve(a, 2 * n + 8))
        return;
    a->buf[a->len++] = a->count++ == 0 ? '{' : ',';
    if (s == NULL) {
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
        return;
    }
    a->len = (size_t)(put_quoted(a->buf + a->len, s) - a->buf);
}

/* Closes a and returns its text, or NULL when out of memory. */
static const char *text_array_end(struct text_array *a)
{
    if (!text_array_reserve(a, 3))
        return NULL;
    if (a->count == 0)
        a->buf[a->len++] = '{';
    a->buf[a->len++] = '}';
    a->buf[a->len] = '\0';
    return a->buf;
}

/* Text of the numbers and the hash of one request's parameters. */
struct request_scratch {
    char hash[2 + 64 + 1];
    char licenses[16], occurred[24], trial_ends[24], reminder[24];
};

/*
 * The parameters of one request, in the order of mw_claim_requests.
 * Returns 0, or -1 when out of memory.
 */
static int claim_request_values(const struct store_item *item,
                                struct mw_arena *arena,
                                const char *values[REQUEST_COLUMNS],
                                struct request_scratch *scratch)
{
    static const char hex[] = "0123456789abcdef";
    const struct mw_request *r = item->request;

    for (int i = 0; i < REQUEST_COLUMNS; i++)
        values[i] = NULL;
    scratch->hash[0] = '\\';
    scratch->hash[1] = 'x';
    for (size_t i = 0; i < sizeof(item->payload_hash); i++) {
        scratch->hash[2 + 2 * i] = hex[item->payload_hash[i] >> 4];
        scratch->hash[3 + 2 * i] = hex[item->payload_hash[i] & 15];
    }
    scratch->hash[sizeof(scratch->hash) - 1] = '\0';
    snprintf(scratch->occurred, sizeof(scratch->occurred), "%lld",
             (long long)item->occurred_at);
    values[0] = r->request_id;
    values[1] = scratch->hash;
    values[2] = item->is_valid ? "t" : "f";
    /* An invalid request may carry anything: keep what cannot fail. */
    values[4] = safe_text(r->msp_id, 4 * MW_MAX_ID);
    values[21] = scratch->occurred;
    if (!item->is_valid)
        return 0;
    values[3] = item->customer_id;
    values[5] = r->msp_domain;
    values[6] = r->requested_by;
    values[7] = r->company_name;
    values[8] = r->primary_domain;
    values[9] = array_literal(arena, r->additional_domains,
                              r->additional_domains_count);
    if (values[9] == NULL)
        return -1;
    values[10] =
        enum_name(mw_mail_platform_names, MW_PLATFORM_COUNT, r->mail_platform);
    values[11] = enum_name(mw_service_names, MW_SERVICE_COUNT, r->service);
    values[12] =
        enum_name(mw_account_type_names, MW_ACCOUNT_COUNT, r->account_type);
    snprintf(scratch->licenses, sizeof(scratch->licenses), "%ld",
             (long)r->licenses);
    values[13] = scratch->licenses;
    values[14] = r->default_admin_email;
    values[15] = r->delivery_destination;
    values[16] = r->policy_template_id;
    values[17] = r->apply_global_rules ? "t" : "f";
    values[18] = r->msp_management ? "t" : "f";
    values[19] = r->two_factor_required ? "t" : "f";
    values[20] = r->monitor_mode ? "t" : "f";
    if (r->account_type == MW_ACCOUNT_TRIAL) {
        snprintf(scratch->trial_ends, sizeof(scratch->trial_ends), "%lld",
                 (long long)item->trial_ends_at);
        values[22] = scratch->trial_ends;
        if (item->trial_reminder_at != 0) {
            snprintf(scratch->reminder, sizeof(scratch->reminder), "%lld",
                     (long long)item->trial_reminder_at);
            values[24] = scratch->reminder;
        }
    }
    values[23] = safe_text(item->traceparent, MW_MAX_TRACEPARENT);
    return 0;
}

/* A domain wanted by a request of a run, for finding shared ones. */
struct domain_slot {
    const char *domain; /* NULL: empty slot */
    size_t position;    /* of the first request wanting it, from 1 */
};

static uint64_t hash_text(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/*
 * Appends the domains each valid request of run wants (primary first,
 * each once) to the domain columns, and the positions of the requests
 * that want a domain another request of run also wants to the shared
 * column.  Returns 0, or -1 when out of memory.
 */
static int put_domains(struct store *store, const struct store_item *items,
                       const size_t *run, size_t count,
                       struct mw_arena *arena)
{
    struct text_array *item_col = &store->columns[REQUEST_COLUMNS];
    struct text_array *domain_col = &store->columns[REQUEST_COLUMNS + 1];
    struct text_array *shared_col = &store->columns[REQUEST_COLUMNS + 2];
    size_t wanted = 0, size = 16;
    struct domain_slot *slots;
    bool *is_shared = arena_alloc(arena, count * sizeof(*is_shared));

    for (size_t i = 0; i < count; i++) {
        const struct store_item *item = &items[run[i]];

        if (item->is_valid)
            wanted += 1 + item->request->additional_domains_count;
    }
    while (size < 2 * wanted)
        size *= 2;
    slots = arena_alloc(arena, size * sizeof(*slots));
    if (is_shared == NULL || slots == NULL)
        return -1;
    memset(is_shared, 0, count * sizeof(*is_shared));
    memset(slots, 0, size * sizeof(*slots));

    for (size_t i = 0; i < count; i++) {
        const struct mw_request *r = items[run[i]].request;
        char position[24];

        if (!items[run[i]].is_valid)
            continue;
        snprintf(position, sizeof(position), "%zu", i + 1);
        for (size_t k = 0; k <= r->additional_domains_count; k++) {
            const char *d = k == 0 ? r->primary_domain
                                   : r->additional_domains[k - 1];
            size_t at = (size_t)hash_text(d) & (size - 1);

            while (slots[at].domain != NULL &&
                   strcmp(slots[at].domain, d) != 0)
                at = (at + 1) & (size - 1);
            if (slots[at].domain == NULL) {
                slots[at].domain = d;
                slots[at].position = i + 1;
            } else if (slots[at].position == i + 1) {
                continue; /* listed twice by this request */
            } else {
                is_shared[slots[at].position - 1] = true;
                is_shared[i] = true;
            }
            text_array_put(item_col, position);
            text_array_put(domain_col, d);
        }
    }
    for (size_t i = 0; i < count; i++) {
        char position[24];

        if (!is_shared[i])
            continue;
        snprintf(position, sizeof(position), "%zu", i + 1);
        text_array_put(shared_col, position);
    }
    return 0;
}

/*
 * Queues one mw_claim_requests call for the count items whose indexes
 * are in run.  Returns 0 when sent, 1 when out of memory, -1 when libpq
 * failed.
 */
static int send_claim_requests(struct store *store,
                               const struct store_item *items,
                               const size_t *run, size_t count,
                               struct mw_arena *arena)
{
    const char *params[CLAIM_REQUESTS_PARAMS];

    for (int c = 0; c < CLAIM_REQUESTS_PARAMS; c++)
        text_array_reset(&store->columns[c]);
    for (size_t i = 0; i < count; i++) {
        const char *values[REQUEST_COLUMNS];
        struct request_scratch scratch;

        if (claim_request_values(&items[run[i]], arena, values, &scratch) != 0)
            return 1;
        for (int c = 0; c < REQUEST_COLUMNS; c++)
            text_array_put(&store->columns[c], values[c]);
    }
    if (put_domains(store, items, run, count, arena) != 0)
        return 1;
    for (int c = 0; c < CLAIM_REQUESTS_PARAMS; c++) {
        params[c] = text_array_end(&store->columns[c]);
        if (params[c] == NULL)
            return 1;
    }
    /* libpq copies the parameters into its buffer before returning. */
    return PQsendQueryPrepared(store->conn, stmt_claim_requests,
                               CLAIM_REQUESTS_PARAMS, params, NULL, NULL,
                               0) == 1
               ? 0
               : -1;
}

static int send_claim_termination(struct store *store, struct store_item *item)
{
    const struct mw_termination_request *t = item->termination;
    const char *values[CLAIM_TERMINATION_PARAMS] = {NULL};
    int lengths[CLAIM_TERMINATION_PARAMS] = {0};
    int formats[CLAIM_TERMINATION_PARAMS] = {0};
    char effective[24], occurred[24];

    values[0] = t->request_id;
    values[1] = (const char *)item->payload_hash;
    lengths[1] = (int)sizeof(item->payload_hash);
    formats[1] = 1;
    values[2] = t->msp_id;
    values[3] = t->customer_id;
    if (t->has_effective_at) {
        snprintf(effective, sizeof(effective), "%lld",
                 (long long)t->effective_at);
        values[4] = effective;
    }
    snprintf(occurred, sizeof(occurred), "%lld", (long long)item->occurred_at);
    values[5] = occurred;
    values[6] = safe_text(item->traceparent, MW_MAX_TRACEPARENT);
    return PQsendQueryPrepared(store->conn, stmt_claim_termination,
                               CLAIM_TERMINATION_PARAMS, values, lengths,
                               formats, 0) == 1
               ? 0
               : -1;
}

/*
 * Sets the outcome of an item that is not sent to the database and
 * returns true: DLQ items, and items whose identifying text PostgreSQL
 * would refuse (rejected here, so that one bad message cannot fail every
 * batch it is retried in; the rules reject such requests anyway).
 */
static bool is_settled_locally(struct store_item *item)
{
    const char *request_id = item_request_id(item);

    if (item->kind == STORE_ITEM_DLQ) {
        item->outcome = STORE_DLQ;
        return true;
    }
    if (safe_text(request_id, MAX_KEY_BYTES) == NULL ||
        (item->kind == STORE_ITEM_TERMINATION &&
         (safe_text(item->termination->msp_id, MAX_KEY_BYTES) == NULL ||
          safe_text(item->termination->customer_id, MAX_KEY_BYTES) == NULL))) {
        item->outcome = STORE_REJECTED;
        item->termination_code = MW_REJ_INVALID_FIELD;
        return true;
    }
    return false;
}

/* Sets item's outcome from the database's word; 0, or -1 when unknown. */
static int set_outcome(struct store_item *item, const char *outcome)
{
    if (strcmp(outcome, "CREATED") == 0)
        item->outcome = STORE_CREATED;
    else if (strcmp(outcome, "REJECTED") == 0)
        item->outcome = STORE_REJECTED;
    else if (strcmp(outcome, "DUPLICATE") == 0)
        item->outcome = STORE_DUPLICATE;
    else if (strcmp(outcome, "CONFLICT") == 0)
        item->outcome = STORE_CONFLICT;
    else if (strcmp(outcome, "SCHEDULED") == 0)
        item->outcome = STORE_SCHEDULED;
    else
        return -1;
    return 0;
}

/*
 * Reads the rows of mw_claim_requests (one per item of run, numbered from
 * 1) into the items.  Returns 0, or -1 when the result is malformed or
 * memory ran out.
 */
static int read_requests(struct store_item *items, const size_t *run,
                         size_t count, const PGresult *res,
                         struct mw_arena *arena)
{
    if (PQntuples(res) != (int)count || PQnfields(res) != 3)
        return -1;
    for (int row = 0; row < (int)count; row++) {
        long no = strtol(PQgetvalue(res, row, 0), NULL, 10);
        struct store_item *item;

        if (no < 1 || no > (long)count || PQgetisnull(res, row, 1))
            return -1;
        item = &items[run[no - 1]];
        if (set_outcome(item, PQgetvalue(res, row, 1)) != 0)
            return -1;
        if (item->outcome == STORE_REJECTED && !PQgetisnull(res, row, 2) &&
            parse_array(arena, PQgetvalue(res, row, 2), &item->taken_domains,
                        &item->taken_domains_count) != 0)
            return -1;
    }
    return 0;
}

/* Reads mw_claim_termination's row into item; 0, or -1 when malformed. */
static int read_termination(struct store_item *item, const PGresult *res)
{
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        set_outcome(item, PQgetvalue(res, 0, 0)) != 0)
        return -1;
    if (!PQgetisnull(res, 0, 1)) {
        item->termination_code = mw_enum_lookup(
            mw_rejection_code_names, MW_REJ_COUNT, PQgetvalue(res, 0, 1));
        if (item->termination_code < 0)
            return -1;
    }
    if (!PQgetisnull(res, 0, 2))
        item->effective_at = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    item->was_trial =
        !PQgetisnull(res, 0, 3) && PQgetvalue(res, 0, 3)[0] == 't';
    return 0;
}

static void reset_outputs(struct store_item *items, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        items[i].outcome = STORE_PENDING;
        items[i].taken_domains = NULL;
        items[i].taken_domains_count = 0;
        items[i].termination_code = 0;
        items[i].effective_at = 0;
        items[i].was_trial = false;
    }
}

/* Rolls back the open transaction; a failure drops the connection. */
static void rollback(struct store *store)
{
    PGresult *res;

    store->in_batch = false;
    if (store->conn == NULL)
        return;
    if (PQpipelineStatus(store->conn) != PQ_PIPELINE_OFF) {
        drop_connection(store);
        return;
    }
    res = PQexec(store->conn, "ROLLBACK");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        drop_connection(store);
    PQclear(res);
}

/*
 * One query of a batch's pipeline: a run of consecutive requests (their
 * indexes are run[first .. first + count)) or one termination (items[index]).
 * Requests are claimed a run at a time and terminations one by one, in the
 * order of the batch, so that a termination sees exactly the customers
 * created before it.
 */
struct claim_query {
    bool is_run;
    size_t first, count;
    size_t index;
};

/*
 * Splits the items the database must see into queries.  Returns the
 * number of queries, or -1 when out of memory.
 */
static long plan_claims(struct store_item *items, size_t count,
                        struct mw_arena *arena, size_t **run,
                        struct claim_query **queries)
{
    size_t n = count > 0 ? count : 1, nrun = 0, nq = 0;

    *run = arena_alloc(arena, n * sizeof(**run));
    *queries = arena_alloc(arena, n * sizeof(**queries));
    if (*run == NULL || *queries == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        struct claim_query *q = nq > 0 ? &(*queries)[nq - 1] : NULL;

        if (is_settled_locally(&items[i]))
            continue;
        if (items[i].kind == STORE_ITEM_TERMINATION) {
            (*queries)[nq++] = (struct claim_query){.index = i};
            continue;
        }
        if (q == NULL || !q->is_run) {
            q = &(*queries)[nq++];
            *q = (struct claim_query){.is_run = true, .first = nrun};
        }
        (*run)[nrun++] = i;
        q->count++;
    }
    return (long)nq;
}

/*
 * One attempt at a batch: BEGIN and the claims in one pipeline.  Sets
 * *is_retry when the failure was a serialization failure or deadlock and
 * the batch may simply run again.
 */
static int claim_once(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena, bool *is_retry,
                      struct mw_error *err)
{
    static const char what[] = "could not claim requests";
    PGresult *res;
    PGresult *failed = NULL; /* the first error, kept for its SQLSTATE */
    size_t *run;
    struct claim_query *queries;
    long nq = plan_claims(items, count, arena, &run, &queries);
    int rc = 0;

    *is_retry = false;
    if (nq < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    if (ensure_connected(store, err) != 0 ||
        prepare_statements(store, err) != 0)
        return -1;
    if (PQenterPipelineMode(store->conn) != 1) {
        set_error(store, err, what, NULL);
        return -1;
    }

    if (send_command(store, "BEGIN") != 0)
        goto broken;
    for (long i = 0; i < nq; i++) {
        const struct claim_query *q = &queries[i];
        int sent = q->is_run ? send_claim_requests(store, items,
                                                   run + q->first, q->count,
                                                   arena)
                             : send_claim_termination(store, &items[q->index]);

        if (sent > 0) {
            /* Half a pipeline is sent: only a new connection is clean. */
            drop_connection(store);
            mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
            mw_error_detail(err, "out of memory");
            return -1;
        }
        if (sent != 0)
            goto broken;
    }
    if (PQpipelineSync(store->conn) != 1)
        goto broken;

    /* One round trip: the results come back in the order sent. */
    res = pipeline_next(store);
    if (res == NULL)
        goto broken;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        failed = res;
    else
        PQclear(res);
    for (long i = 0; i < nq; i++) {
        const struct claim_query *q = &queries[i];

        res = pipeline_next(store);
        if (res == NULL)
            goto broken;
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            int read = q->is_run ? read_requests(items, run + q->first,
                                                 q->count, res, arena)
                                 : read_termination(&items[q->index], res);

            if (read != 0 && rc == 0) {
                const struct store_item *item =
                    &items[q->is_run ? run[q->first] : q->index];

                mw_error_set(err, MW_ERR_DATABASE, false, "%s", what);
                mw_error_detail(err, "unexpected result for request \"%s\"",
                                item_request_id(item));
                rc = -1;
            }
            PQclear(res);
        } else if (failed == NULL &&
                   PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
            failed = res;
        } else {
            PQclear(res);
        }
    }
    if (pipeline_end(store) != 0)
        goto broken;

    if (failed != NULL) {
        *is_retry = is_serialization_state(
            PQresultErrorField(failed, PG_DIAG_SQLSTATE));
        set_error(store, err, what, failed);
        PQclear(failed);
        rc = -1;
    }
    if (rc != 0) {
        rollback(store);
        return -1;
    }
    store->in_batch = true;
    return 0;

broken:
    PQclear(failed);
    set_error(store, err, what, NULL);
    err->retriable = true;
    drop_connection(store);
    return -1;
}

/* Sleeps 5 to 5 + 20 * attempt milliseconds, so that retries spread out. */
static void backoff(struct store *store, int attempt)
{
    long ms = 5 + rand_r(&store->seed) % (20 * attempt);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * The batch transaction makes atomic: every request id claimed, the
 * domains and customers of the requests created, the terminations
 * scheduled (here), and their outbox rows (store_batch_finish).  A crash
 * before the commit leaves no trace, so the redelivered batch starts over.
 */
int store_batch_claim(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena,
                      struct mw_error *err)
{
    bool is_retry = false;

    if (store->in_batch)
        rollback(store);
    for (size_t i = 0; i < count; i++) {
        const struct store_item *item = &items[i];

        if ((item->kind == STORE_ITEM_REQUEST && item->request == NULL) ||
            (item->kind == STORE_ITEM_TERMINATION &&
             item->termination == NULL)) {
            mw_error_set(err, MW_ERR_INPUT, false, "could not claim requests");
            mw_error_detail(err, "Item %zu of the batch has no request.", i);
            return -1;
        }
    }
    for (int attempt = 1; attempt <= CLAIM_MAX_ATTEMPTS; attempt++) {
        reset_outputs(items, count);
        if (claim_once(store, items, count, arena, &is_retry, err) == 0)
            return 0;
        if (!is_retry)
            return -1;
        if (attempt < CLAIM_MAX_ATTEMPTS)
            backoff(store, attempt);
    }
    mw_error_hint(err, "The batch failed %d times on deadlocks; retry it.",
                  CLAIM_MAX_ATTEMPTS);
    return -1;
}

/* Writes v big-endian at p; returns p + 4. */
static unsigned char *put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

/* Which column of an outbox row an array holds. */
enum outbox_column {
    OUTBOX_STREAM,
    OUTBOX_EVENT_ID,
    OUTBOX_KEY,
    OUTBOX_HEADERS,
    OUTBOX_PAYLOAD
};

/* The bytes of one column of row, NULL for SQL null. */
static const void *outbox_value(const struct store_outbox_row *row,
                                enum outbox_column column, size_t *len,
                                unsigned char stream[2])
{
    switch (column) {
    case OUTBOX_STREAM:
        stream[0] = 0;
        stream[1] = row->stream == STORE_STREAM_DLQ ? 1 : 0;
        *len = 2;
        return stream;
    case OUTBOX_EVENT_ID:
        *len = row->event_id ? strlen(row->event_id) : 0;
        return row->event_id;
    case OUTBOX_KEY:
        *len = row->key_len;
        return row->key;
    case OUTBOX_HEADERS:
        /* An empty binary value must not read as null. */
        *len = row->headers_len;
        return row->headers;
    default:
        *len = row->payload_len;
        return row->payload;
    }
}

/*
 * Writes one column of rows as a one-dimensional array in PostgreSQL's
 * binary format (element type oid).  Returns a malloc'ed buffer and sets
 * *len, or NULL when out of memory or over 1 GB (PostgreSQL's limit).
 */
static unsigned char *outbox_array(const struct store_outbox_row *rows,
                                   size_t count, enum outbox_column column,
                                   uint32_t oid, int *len)
{
    size_t total = 20;
    unsigned char stream[2], *buf, *p;

    for (size_t i = 0; i < count; i++) {
        size_t n;

        outbox_value(&rows[i], column, &n, stream);
        total += 4 + n;
    }
    if (total > 1024 * 1024 * 1024 || (buf = malloc(total)) == NULL)
        return NULL;
    p = put_be32(buf, 1);  /* dimensions */
    p = put_be32(p, 1);    /* may hold nulls */
    p = put_be32(p, oid);  /* element type */
    p = put_be32(p, (uint32_t)count);
    p = put_be32(p, 1);    /* lower bound */
    for (size_t i = 0; i < count; i++) {
        size_t n;
        const void *v = outbox_value(&rows[i], column, &n, stream);

        p = put_be32(p, v ? (uint32_t)n : 0xFFFFFFFFu);
        if (v != NULL && n > 0)
            memcpy(p, v, n);
        p += v ? n : 0;
    }
    *len = (int)total;
    return buf;
}

/* Queues the insert of every row; 0 sent, 1 out of memory, -1 libpq. */
static int send_outbox_rows(struct store *store,
                            const struct store_outbox_row *rows, size_t count)
{
    /* int2, text, bytea */
    static const uint32_t oids[OUTBOX_INSERT_PARAMS] = {21, 25, 17, 17, 17};
    unsigned char *arrays[OUTBOX_INSERT_PARAMS] = {NULL};
    int lengths[OUTBOX_INSERT_PARAMS];
    const int formats[OUTBOX_INSERT_PARAMS] = {1, 1, 1, 1, 1};
    int rc = 0;

    for (int c = 0; c < OUTBOX_INSERT_PARAMS && rc == 0; c++) {
        arrays[c] = outbox_array(rows, count, (enum outbox_column)c, oids[c],
                                 &lengths[c]);
        rc = arrays[c] == NULL;
    }
    /* libpq copies the parameters into its buffer before returning. */
    if (rc == 0)
        rc = PQsendQueryPrepared(store->conn, stmt_outbox_insert,
                                 OUTBOX_INSERT_PARAMS,
                                 (const char *const *)arrays, lengths,
                                 formats, 0) == 1
                 ? 0
                 : -1;
    for (int c = 0; c < OUTBOX_INSERT_PARAMS; c++)
        free(arrays[c]);
    return rc;
}

/*
 * Ends the batch transaction (see store_batch_claim): the outbox rows, the
 * notification and the commit go in one pipeline.  Without an open batch
 * it opens one, so a batch of DLQ items alone needs no claim.
 */
int store_batch_finish(struct store *store, const struct store_outbox_row *rows,
                       size_t count, struct mw_error *err)
{
    static const char what[] = "could not commit the batch";
    static const char sql_notify[] = "NOTIFY " OUTBOX_CHANNEL;
    bool is_begun = store->in_batch;
    size_t queries = 1 + 2 * (count > 0) + !is_begun;
    PGresult *failed = NULL;
    bool is_committed = false;

    for (size_t i = 0; i < count; i++) {
        if (rows[i].key_len > INT32_MAX || rows[i].headers_len > INT32_MAX ||
            rows[i].payload_len > INT32_MAX) {
            mw_error_set(err, MW_ERR_INPUT, false, "%s", what);
            mw_error_detail(err, "Outbox row %zu is larger than 2 GB.", i);
            rollback(store);
            return -1;
        }
    }
    if (!is_begun) {
        if (ensure_connected(store, err) != 0 ||
            prepare_statements(store, err) != 0)
            return -1;
    } else if (store->conn == NULL || PQstatus(store->conn) != CONNECTION_OK) {
        /* The claims died with the connection: never commit half. */
        set_error(store, err, what, NULL);
        return -1;
    }
    store->in_batch = false;
    if (PQenterPipelineMode(store->conn) != 1)
        goto broken;
    if (!is_begun && send_command(store, "BEGIN") != 0)
        goto broken;
    if (count > 0) {
        int sent = send_outbox_rows(store, rows, count);

        if (sent > 0) {
            /* Half a pipeline is queued: only a new connection is clean. */
            drop_connection(store);
            mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
            mw_error_detail(err, "out of memory");
            return -1;
        }
        if (sent != 0)
            goto broken;
    }
    if (count > 0 && send_command(store, sql_notify) != 0)
        goto broken;
    if (send_command(store, "COMMIT") != 0 || PQpipelineSync(store->conn) != 1)
        goto broken;

    for (size_t i = 0; i < queries; i++) {
        PGresult *res = pipeline_next(store);
        ExecStatusType status;

        if (res == NULL)
            goto broken;
        status = PQresultStatus(res);
        if (i == queries - 1 && status == PGRES_COMMAND_OK &&
            strcmp(PQcmdStatus(res), "COMMIT") == 0)
            is_committed = true;
        if (failed == NULL && status != PGRES_COMMAND_OK &&
            status != PGRES_TUPLES_OK && status != PGRES_PIPELINE_ABORTED)
            failed = res;
        else
            PQclear(res);
    }
    if (pipeline_end(store) != 0)
        goto broken;
    if (is_committed) {
        PQclear(failed);
        return 0;
    }
    if (failed != NULL) {
        set_error(store, err, what, failed);
        PQclear(failed);
    } else {
        mw_error_set(err, MW_ERR_DATABASE, false, "%s", what);
        mw_error_detail(err, "The server rolled the transaction back.");
    }
    rollback(store);
    return -1;

broken:
    /* The commit may or may not have happened: the batch is re-run and
     * finds its requests claimed, or not, either way consistent. */
    PQclear(failed);
    set_error(store, err, what, NULL);
    err->retriable = true;
    drop_connection(store);
    return -1;
}

void store_batch_abort(struct store *store)
{
    if (store != NULL && store->in_batch)
        rollback(store);
}

/* ---- the relay ---- */

int store_relay_lead(struct store *store, bool *is_leader, struct mw_error *err)
{
    static const char sql_lead[] = "SELECT pg_try_advisory_lock($1, $2)";
    const char *values[2] = {LOCK_CLASS, LOCK_RELAY};
    PGresult *res;

    *is_leader = false;
    if (ensure_connected(store, err) != 0)
        return -1;
    /* Held for the life of the connection: no need to ask again. */
    if (store->is_leader) {
        *is_leader = true;
        return 0;
    }
    res = PQexecParams(store->conn, sql_lead, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        set_error(store, err, "could not take the relay lock", res);
        PQclear(res);
        return -1;
    }
    store->is_leader = PQgetvalue(res, 0, 0)[0] == 't';
    *is_leader = store->is_leader;
    PQclear(res);
    return 0;
}

static int64_t read_be64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* Copies a bytea column into arena; NULL for SQL null. */
static int copy_bytes(struct mw_arena *arena, const PGresult *res, int row,
                      int col, const void **out, size_t *len)
{
    size_t n;
    void *p;

    *out = NULL;
    *len = 0;
    if (PQgetisnull(res, row, col))
        return 0;
    n = (size_t)PQgetlength(res, row, col);
    p = arena_alloc(arena, n > 0 ? n : 1);
    if (p == NULL)
        return -1;
    memcpy(p, PQgetvalue(res, row, col), n);
    *out = p;
    *len = n;
    return 0;
}

/*
 * Known limit: ids are taken at insert and rows become visible at commit,
 * so a row may appear after a higher id was read.  It is still fetched
 * next time (nothing is skipped), only out of id order; events of one
 * customer come from transactions that follow each other, so their order
 * holds.
 */
int store_outbox_fetch(struct store *store, size_t max, struct mw_arena *arena,
                       struct store_outbox_msg **msgs, size_t *count,
                       struct mw_error *err)
{
    static const char sql_fetch[] =
        "SELECT id, stream, key, headers, payload FROM outbox "
        "WHERE published_at IS NULL ORDER BY id LIMIT $1";
    char limit[24];
    const char *values[1] = {limit};
    struct store_outbox_msg *out;
    PGresult *res;
    int rows;

    *msgs = NULL;
    *count = 0;
    if (max == 0)
        return 0;
    if (ensure_connected(store, err) != 0)
        return -1;
    /*
     * Published rows are deleted (or updated), and until VACUUM comes
     * their index entries stay.  A bitmap scan, which PostgreSQL prefers
     * here, visits every one of them in every round; an index scan in id
     * order visits each once, marks it dead and stops at the limit.
     */
    if (!store->is_fetch_set) {
        if (exec_params(store, "SET enable_bitmapscan = off", 0, NULL,
                        "could not read the outbox", err) != 0)
            return -1;
        store->is_fetch_set = true;
    }
    snprintf(limit, sizeof(limit), "%zu", max);
    res = PQexecParams(store->conn, sql_fetch, 1, NULL, values, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_error(store, err, "could not read the outbox", res);
        PQclear(res);
        return -1;
    }
    rows = PQntuples(res);
    out = arena_alloc(arena, sizeof(*out) * (size_t)(rows > 0 ? rows : 1));
    if (out == NULL)
        goto oom;
    for (int i = 0; i < rows; i++) {
        const unsigned char *stream;

        out[i].id = read_be64((const unsigned char *)PQgetvalue(res, i, 0));
        stream = (const unsigned char *)PQgetvalue(res, i, 1);
        out[i].stream = ((stream[0] << 8) | stream[1]) == 1
                            ? STORE_STREAM_DLQ
                            : STORE_STREAM_EVENTS;
        if (copy_bytes(arena, res, i, 2, &out[i].key, &out[i].key_len) != 0 ||
            copy_bytes(arena, res, i, 3, &out[i].headers,
                       &out[i].headers_len) != 0 ||
            copy_bytes(arena, res, i, 4, &out[i].payload,
                       &out[i].payload_len) != 0)
            goto oom;
    }
    PQclear(res);
    *msgs = out;
    *count = (size_t)rows;
    return 0;

oom:
    PQclear(res);
    mw_error_set(err, MW_ERR_SYSTEM, false, "could not read the outbox");
    mw_error_detail(err, "out of memory");
    return -1;
}

/*
 * One round trip, in a transaction of its own that does not wait for the
 * disk: a mark lost to a database crash only publishes the same bytes
 * again, and the relay's next round need not wait for a flush.  Deleting a
 * row costs PostgreSQL far less than rewriting it with published_at.  The
 * ids are numbers of ours, so they go into the text as they are.
 */
int store_outbox_mark_published(struct store *store, const int64_t *ids,
                                size_t count, bool keep, struct mw_error *err)
{
    static const char what[] = "could not mark outbox rows published";
    static const char sql_begin[] =
        "BEGIN; SET LOCAL synchronous_commit = off; ";
    static const char sql_delete[] = "DELETE FROM outbox WHERE id = ANY ('{";
    static const char sql_update[] =
        "UPDATE outbox SET published_at = now() WHERE id = ANY ('{";
    static const char sql_end[] =
        "}'::bigint[]) AND published_at IS NULL; COMMIT";
    PGresult *res;
    char *sql, *p;
    bool is_ok;

    if (count == 0)
        return 0;
    if (ensure_connected(store, err) != 0)
        return -1;
    sql = malloc(sizeof(sql_begin) + sizeof(sql_update) + count * 21 +
                 sizeof(sql_end));
    if (sql == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    p = stpcpy(sql, sql_begin);
    p = stpcpy(p, keep ? sql_update : sql_delete);
    for (size_t i = 0; i < count; i++)
        p += sprintf(p, i > 0 ? ",%lld" : "%lld", (long long)ids[i]);
    strcpy(p, sql_end);
    res = PQexec(store->conn, sql);
    free(sql);
    /* PQexec returns the last statement's result: the COMMIT's. */
    is_ok = PQresultStatus(res) == PGRES_COMMAND_OK &&
            strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!is_ok) {
        set_error(store, err, what, res);
        PQclear(res);
        if (store->conn != NULL &&
            PQtransactionStatus(store->conn) != PQTRANS_IDLE)
            rollback(store);
        return -1;
    }
    PQclear(res);
    return 0;
}

int64_t store_outbox_purge(struct store *store, int64_t retention_ms,
                           struct mw_error *err)
{
    static const char sql_purge[] =
        "DELETE FROM outbox WHERE published_at IS NOT NULL "
        "AND published_at < now() - $1::bigint * interval '1 millisecond'";
    char retention[24];
    const char *values[1] = {retention};
    PGresult *res;
    int64_t deleted;

    if (ensure_connected(store, err) != 0)
        return -1;
    snprintf(retention, sizeof(retention), "%lld", (long long)retention_ms);
    res = PQexecParams(store->conn, sql_purge, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_error(store, err, "could not purge the outbox", res);
        PQclear(res);
        return -1;
    }
    deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return deleted;
}

int store_outbox_backlog(struct store *store, int64_t *count,
                         int64_t *oldest_age_ms, struct mw_error *err)
{
    static const char sql_backlog[] =
        "SELECT count(*), coalesce(mw_ts_to_ms(now()) - "
        "mw_ts_to_ms(min(created_at)), 0) "
        "FROM outbox WHERE published_at IS NULL";
    PGresult *res;

    *count = 0;
    *oldest_age_ms = 0;
    if (ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_backlog, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        set_error(store, err, "could not measure the outbox backlog", res);
        PQclear(res);
        return -1;
    }
    *count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *oldest_age_ms = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    if (*oldest_age_ms < 0)
        *oldest_age_ms = 0;
    PQclear(res);
    return 0;
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

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * LISTENs on a channel once per connection (*is_listening), then waits up
 * to timeout_ms for a notification.  Returns 1, 0 on timeout, or -1.
 */
static int wait_notify(struct store *store, const char *sql_listen,
                       bool *is_listening, int timeout_ms, const char *what,
                       struct mw_error *err)
{
    int64_t deadline = monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    if (ensure_connected(store, err) != 0)
        return -1;
    if (!*is_listening) {
        if (exec_params(store, sql_listen, 0, NULL, what, err) != 0)
            return -1;
        *is_listening = true;
    }
    for (;;) {
        struct pollfd pfd;
        int64_t left;
        int ready;

        if (PQconsumeInput(store->conn) != 1) {
            set_error(store, err, what, NULL);
            err->retriable = true;
            drop_connection(store);
            return -1;
        }
        if (drain_notifies(store))
            return 1;
        left = deadline - monotonic_ms();
        if (left <= 0)
            return 0;
        pfd.fd = PQsocket(store->conn);
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (pfd.fd < 0) {
            set_error(store, err, what, NULL);
            err->retriable = true;
            drop_connection(store);
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

int store_outbox_wait(struct store *store, int timeout_ms, struct mw_error *err)
{
    static const char sql_listen[] = "LISTEN " OUTBOX_CHANNEL;

    return wait_notify(store, sql_listen, &store->is_listening, timeout_ms,
                       "could not wait for outbox notifications", err);
}

/* ---- the lifecycle scheduler ---- */

static const char *const timer_kind_names[] = {
    "TRIAL_ENDING", "TRIAL_CONVERSION", "TERMINATION"};
static const char *const timer_action_names[] = {"FIRED", "CANCELLED",
                                                 "DEFERRED"};

/* Copies a text column into arena; NULL for SQL null.  0, or -1 (OOM). */
static int copy_text(struct mw_arena *arena, const PGresult *res, int row,
                     int col, const char **out)
{
    *out = NULL;
    if (PQgetisnull(res, row, col))
        return 0;
    *out = arena_strdup(arena, PQgetvalue(res, row, col));
    return *out != NULL ? 0 : -1;
}

static int64_t get_ms(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col)
               ? 0
               : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Reads the rows of mw_fire_due_timers; 0, or -1 when malformed or OOM. */
static int read_timers(const PGresult *res, struct mw_arena *arena,
                       struct store_timer **timers, size_t *count)
{
    int rows = PQntuples(res);
    struct store_timer *out =
        arena_alloc(arena, sizeof(*out) * (size_t)(rows > 0 ? rows : 1));

    if (out == NULL || PQnfields(res) != 14)
        return -1;
    for (int i = 0; i < rows; i++) {
        struct store_timer *t = &out[i];
        int action = mw_enum_lookup(timer_action_names, 3,
                                    PQgetvalue(res, i, 1));
        int kind = mw_enum_lookup(timer_kind_names, 3, PQgetvalue(res, i, 2));

        if (action < 0 || kind < 0)
            return -1;
        memset(t, 0, sizeof(*t));
        t->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        t->action = (enum store_timer_action)action;
        t->kind = (enum store_timer_kind)kind;
        if (copy_text(arena, res, i, 3, &t->customer_id) != 0 ||
            copy_text(arena, res, i, 4, &t->customer_request_id) != 0 ||
            copy_text(arena, res, i, 5, &t->msp_id) != 0 ||
            copy_text(arena, res, i, 6, &t->requested_by) != 0 ||
            copy_text(arena, res, i, 11, &t->request_id) != 0 ||
            copy_text(arena, res, i, 12, &t->traceparent) != 0)
            return -1;
        if (t->customer_id == NULL || t->msp_id == NULL ||
            t->requested_by == NULL || t->customer_request_id == NULL)
            return -1;
        t->licenses = (int32_t)strtol(PQgetvalue(res, i, 7), NULL, 10);
        t->created_at = get_ms(res, i, 8);
        t->trial_ends_at = get_ms(res, i, 9);
        t->due_at = get_ms(res, i, 10);
        t->was_trial =
            !PQgetisnull(res, i, 13) && PQgetvalue(res, i, 13)[0] == 't';
    }
    *timers = out;
    *count = (size_t)rows;
    return 0;
}

/*
 * One attempt: BEGIN, then the claim.  Sets *is_retry on a deadlock or
 * serialization failure.  On success the transaction stays open.
 */
static int timers_claim_once(struct store *store, const char *const *values,
                             struct mw_arena *arena,
                             struct store_timer **timers, size_t *count,
                             bool *is_retry, struct mw_error *err)
{
    static const char sql_fire[] =
        "SELECT * FROM mw_fire_due_timers($1::bigint, $2::integer)";
    static const char what[] = "could not claim due timers";
    PGresult *res;

    *is_retry = false;
    /* store_batch_finish writes the outbox with a prepared statement. */
    if (ensure_connected(store, err) != 0 ||
        prepare_statements(store, err) != 0 ||
        exec_params(store, "BEGIN", 0, NULL, what, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_fire, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *is_retry = is_serialization_state(
            PQresultErrorField(res, PG_DIAG_SQLSTATE));
        set_error(store, err, what, res);
        PQclear(res);
        rollback(store);
        return -1;
    }
    if (read_timers(res, arena, timers, count) != 0) {
        PQclear(res);
        rollback(store);
        mw_error_set(err, MW_ERR_DATABASE, false, "%s", what);
        mw_error_detail(err, "unexpected result of mw_fire_due_timers, "
                             "or out of memory");
        return -1;
    }
    PQclear(res);
    store->in_batch = true;
    return 0;
}

/*
 * The scheduler's transaction makes atomic: the timers claimed and marked
 * fired or cancelled, the customers' state changes (here) and the events
 * of the fired ones (store_batch_finish).  A crash before the commit
 * leaves every timer pending, to be claimed again by any replica.
 */
int store_timers_claim(struct store *store, int64_t now_ms, size_t max,
                       struct mw_arena *arena, struct store_timer **timers,
                       size_t *count, struct mw_error *err)
{
    char now[24], limit[24];
    const char *values[2] = {now, limit};
    bool is_retry = false;

    *timers = NULL;
    *count = 0;
    if (store->in_batch)
        rollback(store);
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(limit, sizeof(limit), "%zu", max > INT32_MAX ? INT32_MAX : max);
    for (int attempt = 1; attempt <= CLAIM_MAX_ATTEMPTS; attempt++) {
        if (timers_claim_once(store, values, arena, timers, count, &is_retry,
                              err) == 0)
            return 0;
        if (!is_retry)
            return -1;
        if (attempt < CLAIM_MAX_ATTEMPTS)
            backoff(store, attempt);
    }
    mw_error_hint(err, "The claim failed %d times on deadlocks; retry it.",
                  CLAIM_MAX_ATTEMPTS);
    return -1;
}

int store_timers_pending(struct store *store, int64_t now_ms,
                         int64_t *due_count, int64_t *next_due_ms,
                         struct mw_error *err)
{
    static const char sql_pending[] =
        "SELECT (SELECT count(*) FROM timers "
        "         WHERE fired_at IS NULL AND due_at <= mw_ms_to_ts($1)), "
        "       (SELECT mw_ts_to_ms(min(due_at)) FROM timers "
        "         WHERE fired_at IS NULL)";
    char now[24];
    const char *values[1] = {now};
    PGresult *res;

    *due_count = 0;
    *next_due_ms = -1;
    if (ensure_connected(store, err) != 0)
        return -1;
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    res = PQexecParams(store->conn, sql_pending, 1, NULL, values, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        set_error(store, err, "could not count pending timers", res);
        PQclear(res);
        return -1;
    }
    *due_count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    if (!PQgetisnull(res, 0, 1))
        *next_due_ms = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return 0;
}

int store_timers_wait(struct store *store, int timeout_ms, struct mw_error *err)
{
    static const char sql_listen[] = "LISTEN " TIMERS_CHANNEL;

    return wait_notify(store, sql_listen, &store->is_listening_timers,
                       timeout_ms, "could not wait for timer notifications",
                       err);
}

/* ---- operators ---- */

int store_customer_describe(struct store *store, const char *key,
                            char **json, struct mw_error *err)
{
    static const char what[] = "could not read the customer";
    /* $1: a customer id or null; $2: a domain. */
    static const char sql_describe[] =
        "WITH c AS ("
        "  SELECT * FROM ("
        "    SELECT cu.*, 0 AS rank FROM customers cu"
        "     WHERE cu.customer_id = $1::uuid"
        "    UNION ALL"
        "    SELECT cu.*, CASE WHEN d.released_at IS NULL THEN 1 ELSE 2 END"
        "      FROM customer_domains d JOIN customers cu USING (customer_id)"
        "     WHERE d.domain = $2"
        "  ) AS found ORDER BY rank, terminated_at DESC NULLS FIRST LIMIT 1)"
        "SELECT jsonb_pretty(jsonb_build_object("
        "  'customer', (SELECT to_jsonb(c) - 'rank' FROM c),"
        "  'domains', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "       'domain', d.domain, 'is_primary', d.is_primary,"
        "       'released_at', d.released_at)"
        "       ORDER BY NOT d.is_primary, d.domain), '[]')"
        "     FROM customer_domains d, c WHERE d.customer_id = c.customer_id),"
        "  'termination', (SELECT to_jsonb(t) FROM terminations t, c"
        "     WHERE t.customer_id = c.customer_id"
        "     ORDER BY t.created_at DESC LIMIT 1),"
        "  'pending_timers', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "       'id', tm.id, 'kind', tm.kind, 'due_at', tm.due_at,"
        "       'request_id', tm.request_id) ORDER BY tm.due_at, tm.id),"
        "       '[]')"
        "     FROM timers tm, c"
        "     WHERE tm.customer_id = c.customer_id AND tm.fired_at IS NULL)"
        ")) FROM c";
    char domain[4 * MW_MAX_DOMAIN + 1];
    const char *values[2] = {NULL, domain};
    size_t len;
    PGresult *res;

    *json = NULL;
    if (ensure_connected(store, err) != 0 ||
        exec_params(store, "SET TIME ZONE 'UTC'", 0, NULL, what, err) != 0)
        return -1;
    if (ids_is_uuid(key))
        values[0] = key;
    /* Domains are stored lower-case without a trailing dot. */
    snprintf(domain, sizeof(domain), "%s", key);
    for (char *p = domain; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        domain[len - 1] = '\0';
    if (safe_text(domain, sizeof(domain) - 1) == NULL)
        values[1] = NULL;
    res = PQexecParams(store->conn, sql_describe, 2, NULL, values, NULL, NULL,
                       0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_error(store, err, what, res);
        PQclear(res);
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    *json = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (*json == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    return 1;
}

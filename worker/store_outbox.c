/*
 * The outbox: the end of a batch's transaction, which writes the events
 * and DLQ copies the batch produced beside its claims and commits, and the
 * queries of the relay, which reads those rows back, publishes them and
 * marks them published.  The rows are opaque bytes here: encoding and
 * publishing belong to other modules.
 *
 * Invariant: outbox rows are written only in the transaction whose
 * changes they report (a batch's or a scheduler round's), committed
 * together, and a row whose event id is known already is skipped, so a
 * re-run batch adds nothing twice.  A row leaves only when the relay
 * marks it published.
 */
#include "store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOX_CHANNEL "mw_outbox"

/* The columns of an outbox row: mw_write_outbox takes one array each. */
enum outbox_column {
    OUTBOX_STREAM,
    OUTBOX_EVENT_ID,
    OUTBOX_KEY,
    OUTBOX_HEADERS,
    OUTBOX_PAYLOAD,
    OUTBOX_COLUMNS
};

/*
 * All outbox rows of a batch in one call (mw_write_outbox, in
 * migrations/0004_batch_claim.sql): a row each costs PostgreSQL an executor
 * start-up, which was a third of its time per request.  unnest zips the
 * arrays in order, so ids still follow the order of the rows.
 */
static const char stmt_outbox_insert[] = "mw_outbox_insert";
static const char sql_outbox_insert[] =
    "SELECT mw_write_outbox($1, $2, $3, $4, $5)";
_Static_assert(OUTBOX_COLUMNS == 5, "sql_outbox_insert has 5 parameters");

const struct store_statement store_outbox_statements[] = {
    {stmt_outbox_insert, sql_outbox_insert, OUTBOX_COLUMNS},
};
const size_t store_outbox_statement_count =
    sizeof(store_outbox_statements) / sizeof(store_outbox_statements[0]);

/* ---- the end of a batch ---- */

/* Writes v big-endian at p; returns p + 4. */
static unsigned char *put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

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
    if (total > 1024 * 1024 * 1024)
        return NULL;
    buf = malloc(total);
    if (buf == NULL)
        return NULL;
    p = put_be32(buf, 1); /* dimensions */
    p = put_be32(p, 1);   /* may hold nulls */
    p = put_be32(p, oid); /* element type */
    p = put_be32(p, (uint32_t)count);
    p = put_be32(p, 1); /* lower bound */
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
    static const uint32_t oids[OUTBOX_COLUMNS] = {21, 25, 17, 17, 17};
    unsigned char *arrays[OUTBOX_COLUMNS] = {NULL};
    int lengths[OUTBOX_COLUMNS];
    const int formats[OUTBOX_COLUMNS] = {1, 1, 1, 1, 1};
    int rc = 0;

    for (int c = 0; c < OUTBOX_COLUMNS && rc == 0; c++) {
        arrays[c] = outbox_array(rows, count, (enum outbox_column)c, oids[c],
                                 &lengths[c]);
        rc = arrays[c] == NULL;
    }
    /* libpq copies the parameters into its buffer before returning. */
    if (rc == 0)
        rc = PQsendQueryPrepared(store->conn, stmt_outbox_insert,
                                 OUTBOX_COLUMNS, (const char *const *)arrays,
                                 lengths, formats, 0) == 1
                 ? 0
                 : -1;
    for (int c = 0; c < OUTBOX_COLUMNS; c++)
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
            store_rollback(store);
            return -1;
        }
    }
    if (!is_begun) {
        if (store_ensure_connected(store, err) != 0 ||
            store_prepare_statements(store, err) != 0)
            return -1;
    } else if (store->conn == NULL || PQstatus(store->conn) != CONNECTION_OK) {
        /* The claims died with the connection: never commit half. */
        store_set_error(store, err, what, NULL);
        return -1;
    }
    store->in_batch = false;
    if (PQenterPipelineMode(store->conn) != 1)
        goto broken;
    if (!is_begun && store_send_command(store, "BEGIN") != 0)
        goto broken;
    if (count > 0) {
        int sent = send_outbox_rows(store, rows, count);

        if (sent > 0) {
            /* Half a pipeline is queued: only a new connection is clean. */
            store_drop_connection(store);
            mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
            mw_error_detail(err, "out of memory");
            return -1;
        }
        if (sent != 0)
            goto broken;
    }
    if (count > 0 && store_send_command(store, sql_notify) != 0)
        goto broken;
    if (store_send_command(store, "COMMIT") != 0 ||
        PQpipelineSync(store->conn) != 1)
        goto broken;

    for (size_t i = 0; i < queries; i++) {
        PGresult *res = store_pipeline_next(store);
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
    if (store_pipeline_end(store) != 0)
        goto broken;
    if (is_committed) {
        PQclear(failed);
        return 0;
    }
    if (failed != NULL) {
        store_set_error(store, err, what, failed);
        PQclear(failed);
    } else {
        mw_error_set(err, MW_ERR_DATABASE, false, "%s", what);
        mw_error_detail(err, "The server rolled the transaction back.");
    }
    store_rollback(store);
    return -1;

broken:
    /* The commit may or may not have happened: the batch is re-run and
     * finds its requests claimed, or not, either way consistent. */
    PQclear(failed);
    store_set_error(store, err, what, NULL);
    err->retriable = true;
    store_drop_connection(store);
    return -1;
}

void store_batch_abort(struct store *store)
{
    if (store != NULL && store->in_batch)
        store_rollback(store);
}

/* ---- the relay's queries ---- */

int store_relay_lead(struct store *store, bool *is_leader, struct mw_error *err)
{
    static const char sql_lead[] = "SELECT pg_try_advisory_lock($1, $2)";
    const char *values[2] = {STORE_LOCK_CLASS, STORE_LOCK_RELAY};
    PGresult *res;

    *is_leader = false;
    if (store_ensure_connected(store, err) != 0)
        return -1;
    /* Held for the life of the connection: no need to ask again. */
    if (store->is_leader) {
        *is_leader = true;
        return 0;
    }
    res = PQexecParams(store->conn, sql_lead, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not take the relay lock", res);
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
    if (store_ensure_connected(store, err) != 0)
        return -1;
    /*
     * Published rows are deleted (or updated), and until VACUUM comes
     * their index entries stay.  A bitmap scan, which PostgreSQL prefers
     * here, visits every one of them in every round; an index scan in id
     * order visits each once, marks it dead and stops at the limit.
     */
    if (!store->is_fetch_set) {
        if (store_exec(store, "SET enable_bitmapscan = off", 0, NULL,
                       "could not read the outbox", err) != 0)
            return -1;
        store->is_fetch_set = true;
    }
    snprintf(limit, sizeof(limit), "%zu", max);
    res = PQexecParams(store->conn, sql_fetch, 1, NULL, values, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        store_set_error(store, err, "could not read the outbox", res);
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
    mw_error_set(err, MW_ERR_SYSTEM, true, "could not read the outbox");
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
    if (store_ensure_connected(store, err) != 0)
        return -1;
    sql = malloc(sizeof(sql_begin) + sizeof(sql_update) + count * 21 +
                 sizeof(sql_end));
    if (sql == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
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
        store_set_error(store, err, what, res);
        PQclear(res);
        if (store->conn != NULL &&
            PQtransactionStatus(store->conn) != PQTRANS_IDLE)
            store_rollback(store);
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

    if (store_ensure_connected(store, err) != 0)
        return -1;
    snprintf(retention, sizeof(retention), "%lld", (long long)retention_ms);
    res = PQexecParams(store->conn, sql_purge, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        store_set_error(store, err, "could not purge the outbox", res);
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
    if (store_ensure_connected(store, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_backlog, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not measure the outbox backlog",
                        res);
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

int store_outbox_wait(struct store *store, int timeout_ms, struct mw_error *err)
{
    static const char sql_listen[] = "LISTEN " OUTBOX_CHANNEL;

    return store_wait_notify(store, sql_listen, &store->is_listening,
                             timeout_ms,
                             "could not wait for outbox notifications", err);
}

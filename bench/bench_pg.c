/*
 * PostgreSQL for the benchmark: the worker's own embedded cluster in a
 * private directory (PostgreSQL's defaults, a Unix socket only), or the
 * server MESH_WORKER_DATABASE_URL names; a database per phase, created
 * afresh and dropped afterwards.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Starts the worker's embedded PostgreSQL in a new directory under /tmp
 * that everyone may enter (0755): as root the server runs as the
 * postgres user, and a data directory that user cannot reach would make
 * embedded_pg_start keep the cluster in that user's home instead.
 */
static int pg_start_private(struct bench *b)
{
    struct mw_error err;

    snprintf(b->pg_dir, sizeof(b->pg_dir), "/tmp/mw-bench-pg.XXXXXX");
    if (mkdtemp(b->pg_dir) == NULL) {
        say("could not create a directory in /tmp: %s", strerror(errno));
        b->pg_dir[0] = '\0';
        return -1;
    }
    if (chmod(b->pg_dir, 0755) < 0) {
        say("could not open %s to the server: %s", b->pg_dir, strerror(errno));
        return -1;
    }
    memset(&err, 0, sizeof(err));
    b->pg = embedded_pg_start(b->pg_dir, &err);
    if (b->pg == NULL) {
        say("the private PostgreSQL did not start: %s%s%s%s%s", err.msg,
            err.detail[0] ? "; " : "", err.detail, err.hint[0] ? " " : "",
            err.hint);
        return -1;
    }
    b->base_conninfo = strdup(embedded_pg_conninfo(b->pg));
    return b->base_conninfo ? 0 : -1;
}

int pg_start(struct bench *b)
{
    const char *given = getenv("MESH_WORKER_DATABASE_URL");

    if (given == NULL || given[0] == '\0')
        return pg_start_private(b);
    b->base_conninfo = strdup(given);
    return b->base_conninfo ? 0 : -1;
}

void pg_stop(struct bench *b)
{
    embedded_pg_stop(b->pg);
    b->pg = NULL;
    if (b->pg_dir[0] != '\0')
        remove_tree(b->pg_dir);
    b->pg_dir[0] = '\0';
    free(b->base_conninfo);
    b->base_conninfo = NULL;
}

/* Appends key='value' to out, quoting as libpq wants. */
static void conninfo_add(struct buf *out, const char *key, const char *value)
{
    buf_printf(out, "%s%s='", out->len ? " " : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            buf_printf(out, "\\");
        buf_printf(out, "%c", *p);
    }
    buf_printf(out, "'");
}

/* The base connection string with dbname replaced; the caller frees. */
static char *conninfo_for(const struct bench *b, const char *dbname)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(b->base_conninfo, &errmsg);
    struct buf out = {0};

    if (opts == NULL) {
        say("could not parse the database URL: %s",
            errmsg ? errmsg : "out of memory");
        PQfreemem(errmsg);
        exit(2);
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "dbname") == 0)
            continue;
        if (o->val != NULL && o->val[0] != '\0')
            conninfo_add(&out, o->keyword, o->val);
    }
    conninfo_add(&out, "dbname", dbname);
    PQconninfoFree(opts);
    return out.p;
}

/* Notices (DROP ... IF EXISTS) are not worth a line. */
static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

PGconn *pg_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);

    if (PQstatus(conn) != CONNECTION_OK) {
        say("could not connect to PostgreSQL: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

int pg_exec(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;

    if (rc != 0)
        say("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return rc;
}

/* Creates database name afresh; returns its connection string or NULL. */
char *db_create(struct bench *b, const char *name)
{
    PGconn *conn = pg_connect(b->base_conninfo);
    char sql[256];
    int rc;

    if (conn == NULL)
        return NULL;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\"", name);
    rc = pg_exec(conn, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", name);
    rc = rc ? rc : pg_exec(conn, sql);
    if (b->pg_version[0] == '\0') {
        PGresult *res = PQexec(conn, "SHOW server_version");

        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            snprintf(b->pg_version, sizeof(b->pg_version), "%s",
                     PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    PQfinish(conn);
    return rc == 0 ? conninfo_for(b, name) : NULL;
}

void db_drop(struct bench *b, const char *name)
{
    PGconn *conn = pg_connect(b->base_conninfo);
    char sql[256];

    if (conn == NULL)
        return;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\"", name);
    pg_exec(conn, sql);
    PQfinish(conn);
}

void db_name(const struct bench *b, const char *what, char *out, size_t size)
{
    snprintf(out, size, "mw_bench_%08x_%s", b->tag, what);
}

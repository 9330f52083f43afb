/*
 * mesh-worker-bench: the worker's performance as ratios against the raw
 * limits of PostgreSQL and librdkafka, measured in the same run on the same
 * machine (SPEC §6).
 *
 * One run measures, in order: the PostgreSQL ceiling (COPY of exactly the
 * rows the worker writes for N requests), the Kafka ceiling (librdkafka
 * alone producing and consuming N messages of a request's size), the
 * throughput of one worker and of --replicas workers on N preloaded
 * requests, the latency at a fixed request rate, the RSS of the workers,
 * and the time to fire --timers trial conversions due at once.  It prints
 * a table and writes the same figures as JSON (--json).
 *
 * It runs the real worker binary as child processes.  Kafka is a mock
 * cluster in this process unless MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS names
 * a broker; PostgreSQL is a private cluster in a temporary directory unless
 * MESH_WORKER_DATABASE_URL names a server (a database per phase is created
 * there and dropped afterwards).  Every phase has its own topics, group and
 * database, so phases never see each other's data.
 *
 * Invariant: a figure is only reported when every outcome arrived; a run
 * that lost or doubled input is void and exits 1.  Nothing here asserts a
 * time: targets are reported, never enforced.
 */
#include "arena.h"
#include "codec.h"
#include "embedded_files.h"
#include "ids.h"
#include "kafka.h"
#include "mw.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <limits.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The mock cluster keeps about 5 MiB a partition; stay well below. */
#define MOCK_PARTITION_BUDGET (3 * 1024 * 1024)
#define MIN_PARTITIONS 64
#define MSP_COUNT 1000
/* Give up when no outcome arrived for this long. */
#define STALL_NS (90LL * 1000000000LL)
#define MAX_WORKERS 8

/* Targets of issue #7. */
#define TARGET_PG_RATIO 0.5
#define TARGET_P99_MS 50.0
#define TARGET_RSS_MB 64.0
#define TARGET_RSS_GROWTH_MB 8.0
#define TARGET_TIMERS_S 10.0

enum phase {
    PHASE_CEILING = 1,
    PHASE_KAFKA,
    PHASE_ONE,
    PHASE_MANY,
    PHASE_LATENCY,
    PHASE_TIMERS
};

struct options {
    long n;
    int replicas;
    int latency_seconds;
    int rate;
    long timers;
    const char *json_path;
    const char *worker;
    bool is_quick;
};

struct bench {
    struct options opt;
    uint32_t tag;
    char tmpdir[PATH_MAX];
    char worker[PATH_MAX];
    /* Kafka */
    char *bootstrap;
    bool is_mock;
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_t *admin;
    int partitions;
    /* PostgreSQL */
    char pg_bindir[PATH_MAX];
    char pg_dir[PATH_MAX];
    char *base_conninfo;
    bool is_pg_started;
    const char *pg_user; /* "postgres" when root */
    char pg_version[64];
    /* codec */
    struct codec *codec;
    struct mw_arena *arena;
    size_t request_size; /* average encoded request */
    json_t *json;
    bool is_void;
};

/* ---- small helpers ---- */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double seconds(int64_t ns)
{
    return (double)ns / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    va_list ap;

    fputs("mesh-worker-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (p == NULL) {
        say("out of memory");
        exit(1);
    }
    return p;
}

/* A growing byte buffer for COPY data. */
struct buf {
    char *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    while (b->len + more + 1 > b->cap)
        b->cap = b->cap ? b->cap * 2 : 1 << 16;
    b->p = realloc(b->p, b->cap);
    if (b->p == NULL) {
        say("out of memory");
        exit(1);
    }
}

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends bytes as a bytea literal in COPY text format (\\x...). */
static void buf_bytea(struct buf *b, const void *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *s = data;

    buf_reserve(b, 3 + 2 * len);
    b->p[b->len++] = '\\';
    b->p[b->len++] = '\\';
    b->p[b->len++] = 'x';
    for (size_t i = 0; i < len; i++) {
        b->p[b->len++] = digits[s[i] >> 4];
        b->p[b->len++] = digits[s[i] & 15];
    }
}

static void read_loadavg(char *out, size_t size)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;

    if (f == NULL || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(out, size, "unknown");
    else
        snprintf(out, size, "%.2f %.2f %.2f", a, b, c);
    if (f)
        fclose(f);
}

/* ---- child processes ---- */

/*
 * Runs argv and waits; as user when not NULL (we are root then).  Output
 * goes to log (appended).  Returns the exit status or -1.
 */
static int run_wait(char *const argv[], const char *user, const char *log,
                    char *const envp[])
{
    pid_t pid = fork();
    int status;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        if (user != NULL) {
            const struct passwd *pw = getpwnam(user);

            if (pw == NULL || setgid(pw->pw_gid) != 0 ||
                setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        if (envp)
            execve(argv[0], argv, envp);
        else
            execv(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* An environment: ours, with the given NAME=VALUE entries replacing. */
struct env {
    char **v;
    size_t n;
};

/*
 * Every string and array of an environment comes from env_arena, freed
 * once at exit: phases build several environments and replace entries.
 */
static struct mw_arena *env_arena;

static void *env_alloc(size_t len)
{
    void *p;

    if (env_arena == NULL)
        env_arena = arena_new();
    p = env_arena ? arena_alloc(env_arena, len) : NULL;
    if (p == NULL) {
        say("out of memory");
        exit(1);
    }
    return p;
}

static void env_set(struct env *e, const char *name, const char *value)
{
    size_t nlen = strlen(name);
    char *entry = env_alloc(nlen + strlen(value) + 2);
    char **bigger;

    sprintf(entry, "%s=%s", name, value);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], name, nlen) == 0 && e->v[i][nlen] == '=') {
            e->v[i] = entry;
            return;
        }
    }
    bigger = env_alloc((e->n + 2) * sizeof(*e->v));
    memcpy(bigger, e->v, e->n * sizeof(*e->v));
    e->v = bigger;
    e->v[e->n++] = entry;
    e->v[e->n] = NULL;
}

static void env_init(struct env *e)
{
    size_t count = 0;

    while (environ[count])
        count++;
    e->v = env_alloc((count + 1) * sizeof(*e->v));
    for (size_t i = 0; i < count; i++)
        e->v[i] = environ[i];
    e->v[count] = NULL;
    e->n = count;
}

/* ---- PostgreSQL ---- */

static int find_pg_bindir(char *out, size_t len)
{
    glob_t g;
    int best = -1;

    if (glob("/usr/lib/postgresql/*/bin/pg_ctl", 0, NULL, &g) != 0)
        return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int version = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));

        if (version > best) {
            best = version;
            snprintf(out, len, "/usr/lib/postgresql/%d/bin", version);
        }
    }
    globfree(&g);
    return best < 0 ? -1 : 0;
}

static int pg_start(struct bench *b)
{
    char data[PATH_MAX + 16], log[PATH_MAX + 16], prog[PATH_MAX + 16],
        ctl[PATH_MAX + 16], opts[PATH_MAX + 200], serverlog[PATH_MAX + 16];

    if (find_pg_bindir(b->pg_bindir, sizeof(b->pg_bindir)) < 0) {
        say("no PostgreSQL server found (install postgresql) and "
            "MESH_WORKER_DATABASE_URL is not set");
        return -1;
    }
    /* The server user must reach the directory: /tmp, not a private one. */
    snprintf(b->pg_dir, sizeof(b->pg_dir), "/tmp/mw-bench-pg.XXXXXX");
    if (mkdtemp(b->pg_dir) == NULL) {
        say("could not create a directory in /tmp: %s", strerror(errno));
        return -1;
    }
    if (geteuid() == 0) {
        const struct passwd *pw = getpwnam("postgres");

        if (pw == NULL || chown(b->pg_dir, pw->pw_uid, pw->pw_gid) != 0) {
            say("as root the benchmark runs PostgreSQL as the postgres user, "
                "which is missing");
            return -1;
        }
        b->pg_user = "postgres";
    }
    snprintf(data, sizeof(data), "%s/data", b->pg_dir);
    /* Ours, not the server's: the server writes pg_dir/server.log. */
    snprintf(log, sizeof(log), "%s/pg_ctl.log", b->tmpdir);
    snprintf(serverlog, sizeof(serverlog), "%s/server.log", b->pg_dir);
    snprintf(prog, sizeof(prog), "%s/initdb", b->pg_bindir);
    {
        char *const argv[] = {prog,
                              "-D",
                              data,
                              "--auth=trust",
                              "--username=postgres",
                              "--encoding=UTF8",
                              "--no-locale",
                              "--no-sync",
                              NULL};

        if (run_wait(argv, b->pg_user, log, NULL) != 0) {
            say("initdb failed; see %s", log);
            return -1;
        }
    }
    /* The embedded mode's settings: PostgreSQL's defaults, a socket only. */
    snprintf(opts, sizeof(opts),
             "-c listen_addresses= -c unix_socket_directories=%s -p 5432 "
             "-c max_connections=100",
             b->pg_dir);
    snprintf(ctl, sizeof(ctl), "%s/pg_ctl", b->pg_bindir);
    {
        char *const argv[] = {ctl,  "-D", data, "-l", serverlog, "-w",
                              "-t", "60", "-o", opts, "start",   NULL};

        if (run_wait(argv, b->pg_user, log, NULL) != 0) {
            say("the private PostgreSQL did not start; see %s and %s", log,
                serverlog);
            return -1;
        }
    }
    b->is_pg_started = true;
    b->base_conninfo = xcalloc(PATH_MAX + 64, 1);
    snprintf(b->base_conninfo, PATH_MAX + 64,
             "host=%s port=5432 user=postgres dbname=postgres", b->pg_dir);
    return 0;
}

static void pg_stop(struct bench *b)
{
    char data[PATH_MAX + 16], log[PATH_MAX + 16], ctl[PATH_MAX + 16],
        cmd[PATH_MAX + 16];

    if (!b->is_pg_started)
        return;
    snprintf(data, sizeof(data), "%s/data", b->pg_dir);
    snprintf(log, sizeof(log), "%s/pg_ctl.log", b->tmpdir);
    snprintf(ctl, sizeof(ctl), "%s/pg_ctl", b->pg_bindir);
    {
        char *const argv[] = {ctl,         "-D", data,   "-m",
                              "immediate", "-w", "stop", NULL};

        run_wait(argv, b->pg_user, log, NULL);
    }
    snprintf(cmd, sizeof(cmd), "/bin/rm");
    {
        char *const argv[] = {cmd, "-rf", b->pg_dir, NULL};

        run_wait(argv, NULL, "/dev/null", NULL);
    }
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

static PGconn *pg_connect(const char *conninfo)
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

static int pg_exec(PGconn *conn, const char *sql)
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
static char *db_create(struct bench *b, const char *name)
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

static void db_drop(struct bench *b, const char *name)
{
    PGconn *conn = pg_connect(b->base_conninfo);
    char sql[256];

    if (conn == NULL)
        return;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\"", name);
    pg_exec(conn, sql);
    PQfinish(conn);
}

static void db_name(const struct bench *b, const char *what, char *out,
                    size_t size)
{
    snprintf(out, size, "mw_bench_%08x_%s", b->tag, what);
}

/* ---- Kafka ---- */

static rd_kafka_conf_t *kafka_conf(const struct bench *b)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256];

    if (rd_kafka_conf_set(conf, "bootstrap.servers", b->bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        say("could not configure a Kafka client: %s", errstr);
        exit(2);
    }
    return conf;
}

static void conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[256];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        say("invalid Kafka property %s=%s: %s", name, value, errstr);
        exit(2);
    }
}

static int kafka_start(struct bench *b)
{
    const char *given = getenv("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS");
    char errstr[256];

    if (given != NULL && given[0] != '\0') {
        b->bootstrap = strdup(given);
        b->is_mock = false;
    } else {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();

        rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
        b->mock_rk =
            rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (b->mock_rk == NULL) {
            say("could not create a Kafka client: %s", errstr);
            return -1;
        }
        b->mc = rd_kafka_mock_cluster_new(b->mock_rk, 1);
        if (b->mc == NULL) {
            say("could not start the mock cluster");
            return -1;
        }
        b->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(b->mc));
        b->is_mock = true;
    }
    b->admin =
        rd_kafka_new(RD_KAFKA_PRODUCER, kafka_conf(b), errstr, sizeof(errstr));
    if (b->admin == NULL) {
        say("could not create a Kafka client: %s", errstr);
        return -1;
    }
    return 0;
}

static void kafka_stop(struct bench *b)
{
    if (b->admin)
        rd_kafka_destroy(b->admin);
    if (b->mc)
        rd_kafka_mock_cluster_destroy(b->mc);
    if (b->mock_rk)
        rd_kafka_destroy(b->mock_rk);
}

static int topic_create(struct bench *b, const char *name, int partitions)
{
    rd_kafka_NewTopic_t *nt;
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **results;
    size_t count = 0;
    char errstr[256];
    int rc = -1;

    if (b->is_mock) {
        if (rd_kafka_mock_topic_create(b->mc, name, partitions, 1) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            say("could not create topic %s", name);
            return -1;
        }
        return 0;
    }
    nt = rd_kafka_NewTopic_new(name, partitions, 1, errstr, sizeof(errstr));
    if (nt == NULL) {
        say("could not create topic %s: %s", name, errstr);
        return -1;
    }
    q = rd_kafka_queue_new(b->admin);
    rd_kafka_CreateTopics(b->admin, &nt, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, 60000);
    if (ev != NULL && rd_kafka_event_CreateTopics_result(ev) != NULL) {
        results = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &count);
        if (count == 1 && rd_kafka_topic_result_error(results[0]) ==
                              RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = 0;
        else if (count == 1)
            say("could not create topic %s: %s", name,
                rd_kafka_topic_result_error_string(results[0]));
    } else {
        say("could not create topic %s: no answer", name);
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

/* The three topics of a phase. */
struct topics {
    char requests[128], events[128], dlq[128];
    char group[128];
};

static int topics_create(struct bench *b, const char *what, struct topics *t)
{
    snprintf(t->requests, sizeof(t->requests), "bench.%08x.%s.requests", b->tag,
             what);
    snprintf(t->events, sizeof(t->events), "bench.%08x.%s.events", b->tag,
             what);
    snprintf(t->dlq, sizeof(t->dlq), "bench.%08x.%s.dlq", b->tag, what);
    snprintf(t->group, sizeof(t->group), "bench-%08x-%s", b->tag, what);
    if (topic_create(b, t->requests, b->partitions) < 0 ||
        topic_create(b, t->events, b->partitions) < 0 ||
        topic_create(b, t->dlq, 1) < 0)
        return -1;
    return 0;
}

/* ---- requests ---- */

/* Text of one request, in storage owned by the caller. */
struct request_text {
    char request_id[IDS_UUID_LEN + 1];
    char customer_id[IDS_UUID_LEN + 1];
    char requested_by[64], msp_id[32], msp_domain[64], company[96];
    char primary[96], additional[96], destination[128], admin[128];
    const char *additional_list[1];
};

/* The request id of (phase, index): a UUID the collector can parse. */
static void request_id_of(const struct bench *b, enum phase phase, long index,
                          char out[IDS_UUID_LEN + 1])
{
    snprintf(out, IDS_UUID_LEN + 1, "%08x-0000-4000-8%03x-%012lx", b->tag,
             (unsigned)phase, (unsigned long)index);
}

/* The index of a request id of this run and phase, or -1. */
static long index_of(const struct bench *b, enum phase phase, const char *id,
                     size_t len)
{
    char prefix[32];

    if (len != IDS_UUID_LEN)
        return -1;
    snprintf(prefix, sizeof(prefix), "%08x-0000-4000-8%03x-", b->tag,
             (unsigned)phase);
    if (memcmp(id, prefix, 24) != 0)
        return -1;
    {
        char digits[13];

        memcpy(digits, id + 24, 12);
        digits[12] = '\0';
        return strtol(digits, NULL, 16);
    }
}

/* A valid, distinct CustomerRequested; BUY_NOW unless is_trial. */
static void request_fill(const struct bench *b, enum phase phase, long index,
                         bool is_trial, struct request_text *t,
                         struct mw_request *r)
{
    long msp = index % MSP_COUNT;

    request_id_of(b, phase, index, t->request_id);
    ids_customer_id(t->request_id, t->customer_id);
    snprintf(t->requested_by, sizeof(t->requested_by), "user@msp-%ld.example",
             msp);
    snprintf(t->msp_id, sizeof(t->msp_id), "msp-%ld", msp);
    snprintf(t->msp_domain, sizeof(t->msp_domain), "msp-%ld.example", msp);
    snprintf(t->company, sizeof(t->company), "Customer %ld of run %08x", index,
             b->tag);
    snprintf(t->primary, sizeof(t->primary), "c%ld-p%d-%08x.example.com", index,
             (int)phase, b->tag);
    snprintf(t->additional, sizeof(t->additional),
             "mail-c%ld-p%d-%08x.example.com", index, (int)phase, b->tag);
    snprintf(t->destination, sizeof(t->destination), "mx.%s:25", t->primary);
    snprintf(t->admin, sizeof(t->admin), "admin@%s", t->primary);
    t->additional_list[0] = t->additional;
    memset(r, 0, sizeof(*r));
    r->request_id = t->request_id;
    r->requested_at = 1764000000000LL;
    r->requested_by = t->requested_by;
    r->msp_id = t->msp_id;
    r->msp_domain = t->msp_domain;
    r->mail_platform = MW_PLATFORM_MICROSOFT_365;
    r->service = MW_SERVICE_MESH_GATEWAY;
    r->company_name = t->company;
    r->primary_domain = t->primary;
    r->additional_domains = t->additional_list;
    r->additional_domains_count = 1;
    r->delivery_destination = t->destination;
    r->licenses = 25;
    r->default_admin_email = t->admin;
    r->policy_template_id = NULL;
    r->apply_global_rules = true;
    r->msp_management = true;
    r->two_factor_required = false;
    r->monitor_mode = false;
    r->account_type = is_trial ? MW_ACCOUNT_TRIAL : MW_ACCOUNT_BUY_NOW;
}

/* Encodes request index of phase into arena; 0 or -1. */
static int request_encode(struct bench *b, enum phase phase, long index,
                          bool is_trial, const void **out, size_t *len,
                          struct request_text *t)
{
    struct mw_record rec;
    struct mw_error err;

    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_REQUESTED;
    request_fill(b, phase, index, is_trial, t, &rec.u.request);
    if (codec_encode(b->codec, &rec, b->arena, out, len, &err) < 0) {
        say("could not encode a request: %s", err.msg);
        return -1;
    }
    return 0;
}

static atomic_long delivery_failures;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add(&delivery_failures, 1);
}

static rd_kafka_t *producer_new(const struct bench *b, const char *linger)
{
    rd_kafka_conf_t *conf = kafka_conf(b);
    rd_kafka_t *rk;
    char errstr[256];

    conf_set(conf, "linger.ms", linger);
    conf_set(conf, "queue.buffering.max.messages", "1000000");
    conf_set(conf, "queue.buffering.max.kbytes", "1048576");
    conf_set(conf, "enable.idempotence", "true");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        say("could not create a producer: %s", errstr);
        exit(1);
    }
    return rk;
}

static int produce(rd_kafka_t *rk, const char *topic, const void *key,
                   size_t key_len, const void *value, size_t len)
{
    rd_kafka_resp_err_t kerr;

    for (;;) {
        kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 10);
    }
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        say("could not produce to %s: %s", topic, rd_kafka_err2str(kerr));
        return -1;
    }
    rd_kafka_poll(rk, 0);
    return 0;
}

static int flush_all(rd_kafka_t *rk)
{
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        atomic_load(&delivery_failures) != 0) {
        say("not every message was delivered (%ld failed)",
            atomic_load(&delivery_failures));
        return -1;
    }
    return 0;
}

/* Produces requests [from, to) of phase to topic. */
static int preload(struct bench *b, enum phase phase, const char *topic,
                   long from, long to, bool is_trial)
{
    rd_kafka_t *rk = producer_new(b, "5");
    struct request_text t;
    int rc = 0;

    for (long i = from; i < to && rc == 0; i++) {
        const void *value;
        size_t len;

        if ((i - from) % 1000 == 0)
            arena_reset(b->arena);
        rc = request_encode(b, phase, i, is_trial, &value, &len, &t);
        if (rc == 0)
            rc = produce(rk, topic, t.msp_id, strlen(t.msp_id), value, len);
    }
    if (rc == 0)
        rc = flush_all(rk);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- the outcome collector ---- */

/*
 * A thread reading every partition of an events topic from the start,
 * counting the distinct requests of one phase that got an event of type
 * want, and when each first arrived.
 */
struct collector {
    const struct bench *b;
    enum phase phase;
    const char *topic;
    const char *want; /* event_type header value */
    long n;           /* requests of the phase */
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_int stop;
    atomic_long distinct;
    atomic_long duplicates;
    atomic_long rejected;
    atomic_llong first_ns, last_ns;
    unsigned char *seen;
    int64_t *received_ns; /* per index */
};

static void collect_one(struct collector *c, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *type = NULL, *id = NULL;
    size_t type_len = 0, id_len = 0;
    long index;
    int64_t t = now_ns();

    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "event_type", &type, &type_len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "request_id", &id, &id_len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        type == NULL || id == NULL)
        return;
    index = index_of(c->b, c->phase, id, id_len);
    if (index < 0 || index >= c->n)
        return;
    if (type_len == strlen("CustomerRejected") &&
        memcmp(type, "CustomerRejected", type_len) == 0) {
        atomic_fetch_add(&c->rejected, 1);
        return;
    }
    if (type_len != strlen(c->want) || memcmp(type, c->want, type_len) != 0)
        return;
    if (c->seen[index]) {
        atomic_fetch_add(&c->duplicates, 1);
        return;
    }
    c->seen[index] = 1;
    c->received_ns[index] = t;
    if (atomic_load(&c->first_ns) == 0)
        atomic_store(&c->first_ns, t);
    atomic_store(&c->last_ns, t);
    atomic_fetch_add(&c->distinct, 1);
}

static void *collector_main(void *arg)
{
    struct collector *c = arg;

    while (!atomic_load(&c->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            collect_one(c, m);
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/*
 * A consumer of every partition of topic from the start: assigned, not
 * subscribed, so there is no group join to wait for.  fetch_wait is its
 * fetch.wait.max.ms: the mock cluster answers a fetch that finds nothing
 * only after that long, even when a message arrives meanwhile.
 */
static rd_kafka_t *consumer_new_waiting(const struct bench *b,
                                        const char *topic,
                                        const char *fetch_wait)
{
    rd_kafka_conf_t *conf = kafka_conf(b);
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_t *rk;
    char errstr[256], group[160];

    snprintf(group, sizeof(group), "bench-reader-%08x", b->tag);
    conf_set(conf, "group.id", group);
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "fetch.wait.max.ms", fetch_wait);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        say("could not create a consumer: %s", errstr);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    parts = rd_kafka_topic_partition_list_new(b->partitions);
    for (int p = 0; p < b->partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static rd_kafka_t *consumer_new(const struct bench *b, const char *topic)
{
    return consumer_new_waiting(b, topic, "10");
}

static struct collector *collector_start(const struct bench *b,
                                         enum phase phase, const char *topic,
                                         const char *want, long n)
{
    struct collector *c = xcalloc(1, sizeof(*c));

    c->b = b;
    c->phase = phase;
    c->topic = topic;
    c->want = want;
    c->n = n;
    c->seen = xcalloc((size_t)n, 1);
    c->received_ns = xcalloc((size_t)n, sizeof(*c->received_ns));
    /*
     * The latency run measures arrival: a collector that fetches every
     * 10 ms from the mock would add up to 10 ms of its own to each
     * request, where a broker answers a waiting fetch when data comes.
     */
    c->rk = phase == PHASE_LATENCY ? consumer_new_waiting(b, topic, "1")
                                   : consumer_new(b, topic);
    if (pthread_create(&c->thread, NULL, collector_main, c) != 0) {
        say("could not start a thread");
        exit(1);
    }
    return c;
}

static void collector_stop(struct collector *c)
{
    if (c == NULL)
        return;
    atomic_store(&c->stop, 1);
    pthread_join(c->thread, NULL);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    free(c->seen);
    free(c->received_ns);
    free(c);
}

/*
 * Waits until want distinct outcomes arrived, or none arrived for
 * STALL_NS.  Returns 0 when all did.
 */
static int collector_wait(struct collector *c, long want)
{
    long last = -1;
    int64_t progress = now_ns();

    for (;;) {
        long got = atomic_load(&c->distinct);

        if (got >= want)
            return 0;
        if (got != last) {
            last = got;
            progress = now_ns();
        } else if (now_ns() - progress > STALL_NS) {
            say("stalled: %ld of %ld outcomes after %.0f s without progress",
                got, want, seconds(STALL_NS));
            return -1;
        }
        sleep_ms(20);
    }
}

/* ---- workers and their memory ---- */

struct worker_set {
    pid_t pids[MAX_WORKERS];
    int count;
    /* RSS samples (kB), every 100 ms, of every worker summed per worker */
    pthread_t sampler;
    atomic_int stop;
    long *samples[MAX_WORKERS];
    size_t nsamples[MAX_WORKERS], cap[MAX_WORKERS];
    long hwm_kb[MAX_WORKERS];
};

static long status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t flen = strlen(field);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kb = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static void *sampler_main(void *arg)
{
    struct worker_set *ws = arg;

    while (!atomic_load(&ws->stop)) {
        for (int i = 0; i < ws->count; i++) {
            long rss = status_kb(ws->pids[i], "VmRSS");
            long hwm = status_kb(ws->pids[i], "VmHWM");

            if (rss < 0)
                continue;
            if (hwm > ws->hwm_kb[i])
                ws->hwm_kb[i] = hwm;
            if (ws->nsamples[i] == ws->cap[i]) {
                ws->cap[i] = ws->cap[i] ? ws->cap[i] * 2 : 1024;
                ws->samples[i] =
                    realloc(ws->samples[i], ws->cap[i] * sizeof(long));
                if (ws->samples[i] == NULL) {
                    say("out of memory");
                    exit(1);
                }
            }
            ws->samples[i][ws->nsamples[i]++] = rss;
        }
        sleep_ms(100);
    }
    return NULL;
}

/* Starts count workers with env; their logs go to tmpdir/<what>-<i>.log. */
static int workers_start(struct bench *b, struct worker_set *ws, int count,
                         struct env *env, const char *what)
{
    memset(ws, 0, sizeof(*ws));
    for (int i = 0; i < count; i++) {
        char log[PATH_MAX + 64];
        pid_t pid;

        snprintf(log, sizeof(log), "%s/%s-%d.log", b->tmpdir, what, i);
        pid = fork();
        if (pid < 0) {
            say("could not start the worker: %s", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            char *argv[] = {b->worker, "run", NULL};

            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
            execve(b->worker, argv, env->v);
            _exit(127);
        }
        ws->pids[ws->count++] = pid;
    }
    if (pthread_create(&ws->sampler, NULL, sampler_main, ws) != 0) {
        say("could not start a thread");
        return -1;
    }
    return 0;
}

/* SIGTERM, wait up to 30 s, then SIGKILL.  Stops the sampler first. */
static void workers_stop(struct worker_set *ws)
{
    atomic_store(&ws->stop, 1);
    pthread_join(ws->sampler, NULL);
    for (int i = 0; i < ws->count; i++)
        kill(ws->pids[i], SIGTERM);
    for (int i = 0; i < ws->count; i++) {
        int status;

        for (int tries = 0; tries < 300; tries++) {
            if (waitpid(ws->pids[i], &status, WNOHANG) == ws->pids[i])
                goto reaped;
            sleep_ms(100);
        }
        kill(ws->pids[i], SIGKILL);
        waitpid(ws->pids[i], &status, 0);
    reaped:;
    }
}

static void workers_free(struct worker_set *ws)
{
    for (int i = 0; i < ws->count; i++)
        free(ws->samples[i]);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;

    return (x > y) - (x < y);
}

static double mean_kb(const long *s, size_t from, size_t to)
{
    double sum = 0;

    if (to <= from)
        return 0;
    for (size_t i = from; i < to; i++)
        sum += (double)s[i];
    return sum / (double)(to - from);
}

/* Memory of worker i: peak (VmHWM), steady (median of the second half),
 * growth (mean of the last fifth minus mean of the second fifth), MB. */
struct memory {
    double peak_mb, steady_mb, growth_mb;
};

static struct memory worker_memory(const struct worker_set *ws, int i)
{
    struct memory m = {0};
    size_t n = ws->nsamples[i];
    long *sorted;

    m.peak_mb = (double)ws->hwm_kb[i] / 1024.0;
    if (n < 5)
        return m;
    sorted = xcalloc(n - n / 2, sizeof(long));
    memcpy(sorted, ws->samples[i] + n / 2, (n - n / 2) * sizeof(long));
    qsort(sorted, n - n / 2, sizeof(long), cmp_long);
    m.steady_mb = (double)sorted[(n - n / 2) / 2] / 1024.0;
    free(sorted);
    m.growth_mb = (mean_kb(ws->samples[i], n * 4 / 5, n) -
                   mean_kb(ws->samples[i], n / 5, n * 2 / 5)) /
                  1024.0;
    return m;
}

/* The worker's environment for a phase. */
static void worker_env(struct bench *b, struct env *env, const char *conninfo,
                       const struct topics *t)
{
    char dir[PATH_MAX + 16];

    snprintf(dir, sizeof(dir), "%s/data", b->tmpdir);
    env_init(env);
    env_set(env, "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS", b->bootstrap);
    env_set(env, "MESH_WORKER_DATABASE_URL", conninfo);
    env_set(env, "MESH_WORKER_DATA_DIR", dir);
    env_set(env, "MESH_WORKER_HTTP_ADDR", "");
    env_set(env, "MESH_WORKER_LOG_LEVEL", "info");
    env_set(env, "MESH_WORKER_TOPIC_REQUESTS", t->requests);
    env_set(env, "MESH_WORKER_TOPIC_EVENTS", t->events);
    env_set(env, "MESH_WORKER_TOPIC_DLQ", t->dlq);
    env_set(env, "MESH_WORKER_GROUP_ID", t->group);
    env_set(env, "MESH_WORKER_KAFKA_SESSION_TIMEOUT_MS", "6000");
    env_set(env, "MESH_WORKER_KAFKA_HEARTBEAT_INTERVAL_MS", "1000");
    env_set(env, "MESH_WORKER_KAFKA_LOG_LEVEL", "3");
}

/* ---- JSON and the table ---- */

static void put_num(struct bench *b, const char *key, double value)
{
    json_object_set_new(b->json, key, json_real(value));
}

static void put_int(struct bench *b, const char *key, long long value)
{
    json_object_set_new(b->json, key, json_integer(value));
}

static void put_str(struct bench *b, const char *key, const char *value)
{
    json_object_set_new(b->json, key, json_string(value));
}

static const char *yes_no(bool is_met)
{
    return is_met ? "yes" : "NO";
}

/* ---- phase 1: the PostgreSQL ceiling ---- */

/* COPY data of one slice of the rows. */
struct slice {
    struct buf customers, domains, requests, outbox;
    const char *conninfo;
    int failed;
};

static void ceiling_rows(struct bench *b, struct slice *s, long index,
                         const char *ts)
{
    struct request_text t;
    struct mw_record rec;
    struct mw_customer_created *c = &rec.u.created;
    struct mw_request r;
    struct kafka_headers_buf hb;
    struct mw_error err;
    char event_id[IDS_UUID_LEN + 1];
    unsigned char hash[32];
    const void *payload;
    size_t payload_len;

    request_fill(b, PHASE_CEILING, index, false, &t, &r);
    ids_event_id("CustomerCreated", t.request_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_CREATED;
    c->event_id = event_id;
    c->customer_id = t.customer_id;
    c->request_id = t.request_id;
    c->msp_id = r.msp_id;
    c->occurred_at = 1764000000000LL;
    c->requested_by = r.requested_by;
    c->company_name = r.company_name;
    c->primary_domain = r.primary_domain;
    c->additional_domains = r.additional_domains;
    c->additional_domains_count = r.additional_domains_count;
    c->mail_platform = r.mail_platform;
    c->service = r.service;
    c->account_type = r.account_type;
    c->licenses = r.licenses;
    c->billable = true;
    c->has_billing_starts_at = true;
    c->billing_starts_at = c->occurred_at;
    c->default_admin_email = r.default_admin_email;
    c->delivery_destination = r.delivery_destination;
    c->apply_global_rules = r.apply_global_rules;
    c->msp_management = r.msp_management;
    c->installation = MW_INSTALL_MX_RECORDS;
    if (codec_encode(b->codec, &rec, b->arena, &payload, &payload_len, &err) <
        0) {
        say("could not encode CustomerCreated: %s", err.msg);
        exit(1);
    }
    kafka_headers_init(&hb, b->arena);
    if (kafka_headers_add(&hb, "event_type", "CustomerCreated", 15) ||
        kafka_headers_add(&hb, "event_id", event_id, IDS_UUID_LEN) ||
        kafka_headers_add(&hb, "request_id", t.request_id, IDS_UUID_LEN)) {
        say("out of memory");
        exit(1);
    }
    SHA256((const unsigned char *)t.request_id, IDS_UUID_LEN, hash);

    buf_printf(&s->customers,
               "%s\t%s\t%s\t%s\t%s\t%s\t%s\t{\"%s\"}\t%s\t%s\t%s\t%d\t%s\t%s\t"
               "\\N\tt\tt\tf\tf\tt\tACTIVE\t%s\t%s\t\\N\t\\N\t\\N\n",
               t.customer_id, t.request_id, r.msp_id, r.msp_domain,
               r.requested_by, r.company_name, r.primary_domain, t.additional,
               mw_mail_platform_names[r.mail_platform],
               mw_service_names[r.service],
               mw_account_type_names[r.account_type], (int)r.licenses,
               r.default_admin_email, r.delivery_destination, ts, ts);
    buf_printf(&s->domains, "%s\t%s\tt\n%s\t%s\tf\n", t.primary, t.customer_id,
               t.additional, t.customer_id);
    buf_printf(&s->requests, "%s\tcustomer\t%s\t", t.request_id, r.msp_id);
    buf_bytea(&s->requests, hash, sizeof(hash));
    buf_printf(&s->requests, "\tCREATED\t%s\t%s\n", t.customer_id, ts);
    buf_printf(&s->outbox, "0\t%s\t", event_id);
    buf_bytea(&s->outbox, t.customer_id, IDS_UUID_LEN);
    buf_printf(&s->outbox, "\t");
    buf_bytea(&s->outbox, hb.buf, hb.len);
    buf_printf(&s->outbox, "\t");
    buf_bytea(&s->outbox, payload, payload_len);
    buf_printf(&s->outbox, "\n");
}

static int copy_in(PGconn *conn, const char *sql, const struct buf *data)
{
    PGresult *res = PQexec(conn, sql);
    size_t off = 0;

    if (PQresultStatus(res) != PGRES_COPY_IN) {
        say("%s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    while (off < data->len) {
        size_t chunk = data->len - off > 1 << 20 ? 1 << 20 : data->len - off;

        if (PQputCopyData(conn, data->p + off, (int)chunk) != 1) {
            say("COPY failed: %s", PQerrorMessage(conn));
            return -1;
        }
        off += chunk;
    }
    if (PQputCopyEnd(conn, NULL) != 1) {
        say("COPY failed: %s", PQerrorMessage(conn));
        return -1;
    }
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        say("%s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    return 0;
}

/* One connection's share: all four tables in one transaction. */
static int copy_slices(PGconn *conn, struct slice *slices, int count)
{
    static const char copy_customers[] =
        "COPY customers (customer_id, request_id, msp_id, msp_domain, "
        "requested_by, company_name, primary_domain, additional_domains, "
        "mail_platform, service, account_type, licenses, "
        "default_admin_email, delivery_destination, policy_template_id, "
        "apply_global_rules, msp_management, two_factor_required, "
        "monitor_mode, billable, status, created_at, billing_starts_at, "
        "trial_ends_at, terminated_at, traceparent) FROM STDIN";
    static const char copy_domains[] =
        "COPY customer_domains (domain, customer_id, is_primary) FROM STDIN";
    static const char copy_requests[] =
        "COPY requests (request_id, kind, msp_id, payload_hash, outcome, "
        "customer_id, processed_at) FROM STDIN";
    static const char copy_outbox[] =
        "COPY outbox (stream, event_id, key, headers, payload) FROM STDIN";

    if (pg_exec(conn, "BEGIN") < 0)
        return -1;
    for (int i = 0; i < count; i++) {
        if (copy_in(conn, copy_requests, &slices[i].requests) < 0 ||
            copy_in(conn, copy_domains, &slices[i].domains) < 0 ||
            copy_in(conn, copy_customers, &slices[i].customers) < 0 ||
            copy_in(conn, copy_outbox, &slices[i].outbox) < 0)
            return -1;
    }
    return pg_exec(conn, "COMMIT");
}

struct copy_job {
    PGconn *conn;
    struct slice *slices;
    int count;
    int rc;
};

static void *copy_thread(void *arg)
{
    struct copy_job *job = arg;

    job->rc = copy_slices(job->conn, job->slices, job->count);
    return NULL;
}

/* Rows/s of one attempt with conns connections, or -1. */
static double ceiling_attempt(const char *conninfo, struct slice *slices,
                              int nslices, int conns, long n)
{
    struct copy_job jobs[8];
    pthread_t threads[8];
    PGconn *setup = pg_connect(conninfo);
    int64_t start, elapsed;
    int rc = 0;

    if (setup == NULL ||
        pg_exec(setup, "TRUNCATE customers, customer_domains, requests, "
                       "outbox CASCADE") < 0 ||
        pg_exec(setup, "CHECKPOINT") < 0) {
        PQfinish(setup);
        return -1;
    }
    PQfinish(setup);
    for (int i = 0; i < conns; i++) {
        jobs[i].conn = pg_connect(conninfo);
        if (jobs[i].conn == NULL)
            return -1;
        jobs[i].slices = slices + i * (nslices / conns);
        jobs[i].count = nslices / conns;
    }
    start = now_ns();
    for (int i = 0; i < conns; i++)
        pthread_create(&threads[i], NULL, copy_thread, &jobs[i]);
    for (int i = 0; i < conns; i++) {
        pthread_join(threads[i], NULL);
        rc |= jobs[i].rc;
    }
    elapsed = now_ns() - start;
    for (int i = 0; i < conns; i++)
        PQfinish(jobs[i].conn);
    return rc == 0 ? (double)n / seconds(elapsed) : -1;
}

static int phase_ceiling(struct bench *b, double *ceiling)
{
    enum { SLICES = 2 };
    struct slice slices[SLICES];
    char name[64], log[PATH_MAX + 32];
    char *conninfo;
    struct env env;
    double best = 0;
    long n = b->opt.n;
    int rc = -1;

    say("PostgreSQL ceiling: COPY of the rows of %ld requests", n);
    db_name(b, "ceiling", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL)
        return -1;
    env_init(&env);
    env_set(&env, "MESH_WORKER_DATABASE_URL", conninfo);
    snprintf(log, sizeof(log), "%s/migrate.log", b->tmpdir);
    {
        char *argv[] = {b->worker, "migrate", NULL};

        if (run_wait(argv, NULL, log, env.v) != 0) {
            say("mesh-worker migrate failed; see %s", log);
            goto done;
        }
    }
    memset(slices, 0, sizeof(slices));
    for (long i = 0; i < n; i++) {
        if (i % 1000 == 0)
            arena_reset(b->arena);
        ceiling_rows(b, &slices[i % SLICES], i, "2025-11-24 16:00:00+00");
    }
    put_int(b, "pg_ceiling_bytes",
            (long long)(slices[0].customers.len + slices[0].domains.len +
                        slices[0].requests.len + slices[0].outbox.len) *
                SLICES);
    for (int conns = 1; conns <= SLICES; conns *= 2) {
        double rate = ceiling_attempt(conninfo, slices, SLICES, conns, n);
        char key[64];

        if (rate < 0)
            goto done;
        say("  %d connection(s): %.0f requests/s", conns, rate);
        snprintf(key, sizeof(key), "pg_ceiling_%dconn_rps", conns);
        put_num(b, key, rate);
        if (rate > best)
            best = rate;
    }
    *ceiling = best;
    put_num(b, "pg_ceiling_rps", best);
    rc = 0;
done:
    for (int i = 0; i < SLICES; i++) {
        free(slices[i].customers.p);
        free(slices[i].domains.p);
        free(slices[i].requests.p);
        free(slices[i].outbox.p);
    }
    free(conninfo);
    db_drop(b, name);
    return rc;
}

/* ---- phase 2: the Kafka ceiling ---- */

static int phase_kafka(struct bench *b, double *ceiling, double *produce_rps,
                       double *consume_rps)
{
    char topic[128];
    rd_kafka_t *rk;
    struct request_text t;
    const void *value;
    size_t len;
    char *payload;
    int64_t start, produce_ns, consume_ns;
    long n = b->opt.n, got = 0;
    rd_kafka_t *crk;

    say("Kafka ceiling: %ld messages of %zu bytes", n, b->request_size);
    snprintf(topic, sizeof(topic), "bench.%08x.kafka", b->tag);
    if (topic_create(b, topic, b->partitions) < 0)
        return -1;
    arena_reset(b->arena);
    if (request_encode(b, PHASE_KAFKA, 0, false, &value, &len, &t) < 0)
        return -1;
    payload = xcalloc(len, 1);
    memcpy(payload, value, len);
    rk = producer_new(b, "5");
    start = now_ns();
    for (long i = 0; i < n; i++) {
        char key[32];
        int klen = snprintf(key, sizeof(key), "msp-%ld", i % MSP_COUNT);

        if (produce(rk, topic, key, (size_t)klen, payload, len) < 0) {
            rd_kafka_destroy(rk);
            free(payload);
            return -1;
        }
    }
    if (flush_all(rk) < 0) {
        rd_kafka_destroy(rk);
        free(payload);
        return -1;
    }
    produce_ns = now_ns() - start;
    rd_kafka_destroy(rk);
    free(payload);

    /* From the first message to the last, as the worker is measured. */
    crk = consumer_new(b, topic);
    start = 0;
    {
        int64_t waited = now_ns();

        while (got < n && now_ns() - waited < STALL_NS) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(crk, 100);

            if (m == NULL)
                continue;
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (got++ == 0)
                    start = now_ns();
                waited = now_ns();
            }
            rd_kafka_message_destroy(m);
        }
    }
    consume_ns = now_ns() - start;
    rd_kafka_consumer_close(crk);
    rd_kafka_destroy(crk);
    if (got != n) {
        say("the Kafka ceiling read %ld of %ld messages: void", got, n);
        b->is_void = true;
        return -1;
    }
    *produce_rps = (double)n / seconds(produce_ns);
    *consume_rps = (double)n / seconds(consume_ns);
    /* A message is produced once and consumed once, as a request is. */
    *ceiling = (double)n / seconds(produce_ns + consume_ns);
    say("  produce %.0f msgs/s, consume %.0f msgs/s, together %.0f msgs/s",
        *produce_rps, *consume_rps, *ceiling);
    put_num(b, "kafka_produce_mps", *produce_rps);
    put_num(b, "kafka_consume_mps", *consume_rps);
    put_num(b, "kafka_ceiling_mps", *ceiling);
    return 0;
}

/* ---- phase 3: throughput ---- */

struct throughput {
    double rps;      /* first outcome to last */
    double wall_rps; /* worker start to last outcome */
    double seconds;
    struct memory mem[MAX_WORKERS];
    int workers;
    long outcomes, duplicates, rejected;
};

static int phase_throughput(struct bench *b, enum phase phase, int replicas,
                            struct throughput *out)
{
    const char *what = phase == PHASE_ONE ? "one" : "many";
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    int64_t start;
    long n = b->opt.n;
    int rc;

    say("throughput: %ld preloaded requests, %d worker(s)", n, replicas);
    db_name(b, what, name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, what, &t) < 0 ||
        preload(b, phase, t.requests, 0, n, false) < 0) {
        free(conninfo);
        return -1;
    }
    worker_env(b, &env, conninfo, &t);
    c = collector_start(b, phase, t.events, "CustomerCreated", n);
    start = now_ns();
    if (workers_start(b, &ws, replicas, &env, what) < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    /* Late duplicates would show now. */
    sleep_ms(500);
    memset(out, 0, sizeof(*out));
    out->outcomes = atomic_load(&c->distinct);
    out->duplicates = atomic_load(&c->duplicates);
    out->rejected = atomic_load(&c->rejected);
    if (rc == 0) {
        int64_t first = atomic_load(&c->first_ns);
        int64_t last = atomic_load(&c->last_ns);

        out->seconds = seconds(last - start);
        out->rps = (double)n / seconds(last - first);
        out->wall_rps = (double)n / seconds(last - start);
    }
    out->workers = replicas;
    for (int i = 0; i < replicas; i++)
        out->mem[i] = worker_memory(&ws, i);
    say("  %ld outcomes (%ld duplicates, %ld rejected): %.0f requests/s "
        "(%.0f with start-up)",
        out->outcomes, out->duplicates, out->rejected, out->rps, out->wall_rps);
    if (out->outcomes != n || out->duplicates != 0 || out->rejected != 0) {
        say("  outcome count %ld is not %ld (or duplicates/rejections): "
            "the run is void; logs in %s",
            out->outcomes, n, b->tmpdir);
        b->is_void = true;
        rc = -1;
    }
    collector_stop(c);
    workers_free(&ws);
    free(conninfo);
    db_drop(b, name);
    return rc;
}

/* ---- phase 4: latency ---- */

struct latency {
    double p50, p95, p99, max; /* ms */
    long sent, received;
    double achieved_rate;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static int phase_latency(struct bench *b, struct latency *out)
{
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    rd_kafka_t *rk;
    long total = (long)b->opt.rate * b->opt.latency_seconds;
    long n = total + 1; /* index 0 is the warm-up request */
    int64_t *sent_ns = xcalloc((size_t)n, sizeof(int64_t));
    double *lat;
    struct timespec next;
    int64_t period_ns = 1000000000LL / b->opt.rate, t0;
    int rc = 0;

    say("latency: %d requests/s for %d s", b->opt.rate, b->opt.latency_seconds);
    memset(out, 0, sizeof(*out));
    db_name(b, "latency", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, "latency", &t) < 0) {
        free(conninfo);
        free(sent_ns);
        return -1;
    }
    worker_env(b, &env, conninfo, &t);
    c = collector_start(b, PHASE_LATENCY, t.events, "CustomerCreated", n);
    if (workers_start(b, &ws, 1, &env, "latency") < 0)
        return -1;
    /* The portal's producer: no linger, so produce time is send time. */
    rk = producer_new(b, "0");
    {
        struct request_text rt;
        const void *value;
        size_t len;

        arena_reset(b->arena);
        if (request_encode(b, PHASE_LATENCY, 0, false, &value, &len, &rt) < 0 ||
            produce(rk, t.requests, rt.msp_id, strlen(rt.msp_id), value, len) <
                0 ||
            collector_wait(c, 1) < 0) {
            say("  the worker never answered the warm-up request");
            rc = -1;
            goto done;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &next);
    t0 = now_ns();
    for (long i = 1; i < n; i++) {
        struct request_text rt;
        const void *value;
        size_t len;

        if (i % 1000 == 0)
            arena_reset(b->arena);
        /* Encode first, then wait for the slot, so the time is the send. */
        if (request_encode(b, PHASE_LATENCY, i, false, &value, &len, &rt) < 0) {
            rc = -1;
            goto done;
        }
        next.tv_nsec += period_ns;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) ==
               EINTR)
            ;
        sent_ns[i] = now_ns();
        if (produce(rk, t.requests, rt.msp_id, strlen(rt.msp_id), value, len) <
            0) {
            rc = -1;
            goto done;
        }
        out->sent++;
    }
    out->achieved_rate = (double)out->sent / seconds(now_ns() - t0);
    if (flush_all(rk) < 0 || collector_wait(c, n) < 0)
        rc = -1;
done:
    rd_kafka_destroy(rk);
    workers_stop(&ws);
    lat = xcalloc((size_t)n, sizeof(double));
    for (long i = 1; i < n; i++) {
        if (c->seen[i] && sent_ns[i] != 0)
            lat[out->received++] =
                (double)(c->received_ns[i] - sent_ns[i]) / 1e6;
    }
    if (out->received > 0) {
        qsort(lat, (size_t)out->received, sizeof(double), cmp_double);
        out->p50 = lat[(size_t)((double)(out->received - 1) * 0.50)];
        out->p95 = lat[(size_t)((double)(out->received - 1) * 0.95)];
        out->p99 = lat[(size_t)((double)(out->received - 1) * 0.99)];
        out->max = lat[out->received - 1];
    }
    say("  %ld sent, %ld answered: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, "
        "max %.1f ms",
        out->sent, out->received, out->p50, out->p95, out->p99, out->max);
    if (rc == 0 && (out->received != total || c->duplicates || c->rejected)) {
        say("  not every request was answered exactly once: void");
        b->is_void = true;
        rc = -1;
    } else if (rc != 0) {
        b->is_void = true;
    }
    free(lat);
    free(sent_ns);
    collector_stop(c);
    workers_free(&ws);
    free(conninfo);
    db_drop(b, name);
    return rc;
}

/* ---- phase 5: timers ---- */

struct timers {
    double seconds;      /* worker start to the last TrialConverted */
    double fire_seconds; /* first to last TrialConverted */
    long fired;
};

static int phase_timers(struct bench *b, struct timers *out)
{
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    long n = b->opt.timers;
    int64_t start;
    int rc;

    memset(out, 0, sizeof(*out));
    say("timers: %ld trials converting at once", n);
    db_name(b, "timers", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, "timers", &t) < 0 ||
        preload(b, PHASE_TIMERS, t.requests, 0, n, true) < 0) {
        free(conninfo);
        return -1;
    }
    /* First the trials, created by the worker itself. */
    worker_env(b, &env, conninfo, &t);
    env_set(&env, "MESH_WORKER_TRIAL_PERIOD", "14d");
    env_set(&env, "MESH_WORKER_TRIAL_REMINDER", "0");
    c = collector_start(b, PHASE_TIMERS, t.events, "CustomerCreated", n);
    if (workers_start(b, &ws, 1, &env, "timers-create") < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    workers_free(&ws);
    collector_stop(c);
    if (rc < 0) {
        say("  the trials were not all created: void");
        b->is_void = true;
        goto done;
    }
    /* Then a worker whose clock is past every trial's end. */
    env_set(&env, "MESH_WORKER_CLOCK_OFFSET_MS", "1296000000");
    c = collector_start(b, PHASE_TIMERS, t.events, "TrialConverted", n);
    start = now_ns();
    if (workers_start(b, &ws, 1, &env, "timers-fire") < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    workers_free(&ws);
    out->fired = atomic_load(&c->distinct);
    if (rc == 0) {
        out->seconds = seconds(atomic_load(&c->last_ns) - start);
        out->fire_seconds =
            seconds(atomic_load(&c->last_ns) - atomic_load(&c->first_ns));
    }
    say("  %ld TrialConverted (%ld duplicates) in %.2f s from start "
        "(%.2f s first to last)",
        out->fired, atomic_load(&c->duplicates), out->seconds,
        out->fire_seconds);
    if (out->fired != n || atomic_load(&c->duplicates) != 0) {
        b->is_void = true;
        rc = -1;
    }
    collector_stop(c);
done:
    free(conninfo);
    db_drop(b, name);
    return rc;
}

/* ---- the report ---- */

/* True when the worker has a lifecycle: a migration fires due timers. */
static bool has_scheduler(void)
{
    for (const struct mw_embedded_file *f = mw_embedded_files; f->kind; f++) {
        if (strcmp(f->kind, "migration") == 0 &&
            strstr(f->text, "mw_fire_due_timers") != NULL)
            return true;
    }
    return false;
}

static void machine(char *out, size_t size)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512], model[256] = "unknown CPU";
    long mem_kb = 0;

    if (f) {
        while (fgets(line, sizeof(line), f)) {
            char *colon = strchr(line, ':');

            if (strncmp(line, "model name", 10) == 0 && colon) {
                snprintf(model, sizeof(model), "%s", colon + 2);
                model[strcspn(model, "\n")] = '\0';
                break;
            }
        }
        fclose(f);
    }
    f = fopen("/proc/meminfo", "r");
    if (f) {
        if (fscanf(f, "MemTotal: %ld kB", &mem_kb) != 1)
            mem_kb = 0;
        fclose(f);
    }
    snprintf(out, size, "%ld CPUs (%s), %.1f GiB RAM",
             sysconf(_SC_NPROCESSORS_ONLN), model,
             (double)mem_kb / 1024.0 / 1024.0);
}

static void row(const char *figure, const char *value, const char *target,
                const char *met)
{
    printf("| %-44s | %-26s | %-12s | %-3s |\n", figure, value, target, met);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mesh-worker-bench [-n N] [--replicas R] "
            "[--latency-seconds S]\n"
            "                         [--rate R] [--timers N] [--json FILE] "
            "[--worker PATH]\n"
            "                         [--quick]\n"
            "\n"
            "Measures the worker against PostgreSQL's and librdkafka's own "
            "limits in\none run.  Kafka: MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS "
            "or an in-process mock\ncluster; PostgreSQL: "
            "MESH_WORKER_DATABASE_URL or a private cluster.\n"
            "\n"
            "  -n N                 requests of the ceiling and throughput "
            "runs (200000)\n"
            "  --replicas R         workers of the second throughput run "
            "(2; 0 skips it)\n"
            "  --latency-seconds S  length of the latency run (30)\n"
            "  --rate R             requests/s of the latency run (1000)\n"
            "  --timers N           trials converting at once (100000; 0 "
            "skips)\n"
            "  --json FILE          also write the figures as JSON\n"
            "  --worker PATH        the mesh-worker binary (next to this "
            "one, or ../)\n"
            "  --quick              a smoke run: N=1000, 3 s at 200/s, "
            "500 timers\n"
            "\nExit status: 0 measured, 1 a run was void (an outcome was "
            "lost or doubled)\nor failed, 2 bad usage.\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"replicas", required_argument, NULL, 'r'},
        {"latency-seconds", required_argument, NULL, 'l'},
        {"rate", required_argument, NULL, 'R'},
        {"timers", required_argument, NULL, 't'},
        {"json", required_argument, NULL, 'j'},
        {"worker", required_argument, NULL, 'w'},
        {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    bool has_n = false, has_l = false, has_r = false, has_t = false;
    int opt;

    o->n = 200000;
    o->replicas = 2;
    o->latency_seconds = 30;
    o->rate = 1000;
    o->timers = 100000;
    while ((opt = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            o->n = atol(optarg);
            has_n = true;
            break;
        case 'r':
            o->replicas = atoi(optarg);
            break;
        case 'l':
            o->latency_seconds = atoi(optarg);
            has_l = true;
            break;
        case 'R':
            o->rate = atoi(optarg);
            has_r = true;
            break;
        case 't':
            o->timers = atol(optarg);
            has_t = true;
            break;
        case 'j':
            o->json_path = optarg;
            break;
        case 'w':
            o->worker = optarg;
            break;
        case 'q':
            o->is_quick = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (o->is_quick) {
        o->n = has_n ? o->n : 1000;
        o->latency_seconds = has_l ? o->latency_seconds : 3;
        o->rate = has_r ? o->rate : 200;
        o->timers = has_t ? o->timers : 500;
    }
    if (optind != argc || o->n < 2 || o->n > 100000000L || o->replicas < 0 ||
        o->replicas > MAX_WORKERS || o->latency_seconds < 0 || o->rate < 1 ||
        o->rate > 1000000 || o->timers < 0) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int find_worker(struct bench *b, const char *argv0)
{
    char self[PATH_MAX], dir[PATH_MAX];
    ssize_t len;

    if (b->opt.worker != NULL) {
        snprintf(b->worker, sizeof(b->worker), "%s", b->opt.worker);
        return access(b->worker, X_OK) == 0 ? 0 : -1;
    }
    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len < 0)
        snprintf(self, sizeof(self), "%s", argv0);
    else
        self[len] = '\0';
    snprintf(dir, sizeof(dir), "%s", self);
    *strrchr(dir, '/') = '\0';
    snprintf(b->worker, sizeof(b->worker), "%.4000s/mesh-worker", dir);
    if (access(b->worker, X_OK) == 0)
        return 0;
    snprintf(b->worker, sizeof(b->worker), "%.4000s/../mesh-worker", dir);
    return access(b->worker, X_OK) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct bench bench, *b = &bench;
    struct mw_error err;
    char load_start[64], load_end[64], machine_text[512], text[128];
    double pg_ceiling = 0, kafka_ceiling = 0, produce_rps = 0, consume_rps = 0;
    struct throughput one = {0}, many = {0};
    struct latency lat = {0};
    struct timers tim = {0};
    bool has_one = false, has_many = false, has_lat = false, has_tim = false;
    bool is_timers_measured;
    int64_t started = now_ns();
    int status = 0;

    memset(b, 0, sizeof(*b));
    signal(SIGPIPE, SIG_IGN);
    if (parse_options(argc, argv, &b->opt) < 0)
        return 2;
    if (find_worker(b, argv[0]) < 0) {
        say("cannot find the mesh-worker binary (%s); use --worker PATH",
            b->worker);
        return 2;
    }
    b->tag = (uint32_t)getpid() ^ (uint32_t)time(NULL) << 12;
    snprintf(b->tmpdir, sizeof(b->tmpdir), "%s/mw-bench.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(b->tmpdir) == NULL) {
        say("could not create a temporary directory: %s", strerror(errno));
        return 1;
    }
    b->json = json_object();
    b->codec = codec_new(&err);
    b->arena = arena_new();
    if (b->codec == NULL || b->arena == NULL) {
        say("could not set up the codec: %s", err.msg);
        return 1;
    }
    {
        struct request_text t;
        const void *value;

        if (request_encode(b, PHASE_KAFKA, 123456, false, &value,
                           &b->request_size, &t) < 0)
            return 1;
    }
    /* No partition may hold more than the mock keeps (a third of it). */
    b->partitions = MIN_PARTITIONS;
    {
        long need = (long)((b->opt.n * (long)(b->request_size * 2 + 200)) /
                           MOCK_PARTITION_BUDGET) +
                    1;

        if (need > b->partitions)
            b->partitions = (int)need;
    }
    read_loadavg(load_start, sizeof(load_start));
    machine(machine_text, sizeof(machine_text));
    if (kafka_start(b) < 0)
        return 1;
    if (getenv("MESH_WORKER_DATABASE_URL") != NULL &&
        getenv("MESH_WORKER_DATABASE_URL")[0] != '\0') {
        b->base_conninfo = strdup(getenv("MESH_WORKER_DATABASE_URL"));
    } else if (pg_start(b) < 0) {
        kafka_stop(b);
        return 1;
    }
    say("kafka %s (%s), %d partitions; worker %s; logs in %s",
        b->is_mock ? "mock cluster in this process" : "broker", b->bootstrap,
        b->partitions, b->worker, b->tmpdir);

    if (phase_ceiling(b, &pg_ceiling) < 0)
        status = 1;
    if (status == 0 &&
        phase_kafka(b, &kafka_ceiling, &produce_rps, &consume_rps) < 0)
        status = 1;
    if (status == 0) {
        has_one = phase_throughput(b, PHASE_ONE, 1, &one) == 0;
        status |= !has_one;
    }
    if (status == 0 && b->opt.replicas > 0) {
        has_many = phase_throughput(b, PHASE_MANY, b->opt.replicas, &many) == 0;
        status |= !has_many;
    }
    if (status == 0 && b->opt.latency_seconds > 0) {
        has_lat = phase_latency(b, &lat) == 0;
        status |= !has_lat;
    }
    is_timers_measured = b->opt.timers > 0 && has_scheduler();
    if (status == 0 && is_timers_measured) {
        has_tim = phase_timers(b, &tim) == 0;
        status |= !has_tim;
    }
    read_loadavg(load_end, sizeof(load_end));

    /* The report. */
    printf("\nmesh-worker-bench: N=%ld, %d partitions, Kafka %s, "
           "PostgreSQL %s (%s)\n",
           b->opt.n, b->partitions,
           b->is_mock ? "mock cluster in-process" : b->bootstrap,
           b->pg_version[0] ? b->pg_version : "?",
           b->is_pg_started ? "private, default settings" : "given");
    printf("librdkafka %s; machine: %s\n", rd_kafka_version_str(),
           machine_text);
    printf("load average (1, 5, 15 min): %s at start, %s at end; %.0f s\n\n",
           load_start, load_end, seconds(now_ns() - started));
    printf("| %-44s | %-26s | %-12s | %-3s |\n", "figure", "value", "target",
           "met");
    printf("|%s|%s|%s|%s|\n", "----------------------------------------------",
           "----------------------------", "--------------", "-----");
    snprintf(text, sizeof(text), "%.0f requests/s", pg_ceiling);
    row("PG ceiling (COPY, best of 1 and 2 conns)", text, "", "");
    snprintf(text, sizeof(text), "%.0f msgs/s", kafka_ceiling);
    row("Kafka ceiling (produce then consume)", text, "", "");
    snprintf(text, sizeof(text), "%.0f / %.0f msgs/s", produce_rps,
             consume_rps);
    row("  produce / consume alone", text, "", "");
    if (has_one) {
        double ratio = one.rps / pg_ceiling;

        snprintf(text, sizeof(text), "%.0f requests/s", one.rps);
        row("throughput, 1 worker", text, "", "");
        snprintf(text, sizeof(text), "%.0f requests/s", one.wall_rps);
        row("  including start-up (3 s group join)", text, "", "");
        snprintf(text, sizeof(text), "%.3f", ratio);
        row("  ratio to the PG ceiling", text, ">= 0.5",
            yes_no(ratio >= TARGET_PG_RATIO));
        snprintf(text, sizeof(text), "%.3f", one.rps / kafka_ceiling);
        row("  ratio to the Kafka ceiling", text, "", "");
        snprintf(text, sizeof(text), "%.1f MB", one.mem[0].peak_mb);
        row("  worker RSS peak", text, "< 64 MB",
            yes_no(one.mem[0].peak_mb < TARGET_RSS_MB));
        snprintf(text, sizeof(text), "%.1f MB, %+.1f MB", one.mem[0].steady_mb,
                 one.mem[0].growth_mb);
        row("  worker RSS steady, growth over the run", text, "flat (< 8 MB)",
            yes_no(one.mem[0].growth_mb < TARGET_RSS_GROWTH_MB));
        put_num(b, "throughput_1_rps", one.rps);
        put_num(b, "throughput_1_wall_rps", one.wall_rps);
        put_num(b, "throughput_1_seconds", one.seconds);
        put_num(b, "ratio_1_pg", ratio);
        put_num(b, "ratio_1_kafka", one.rps / kafka_ceiling);
        put_num(b, "rss_1_peak_mb", one.mem[0].peak_mb);
        put_num(b, "rss_1_steady_mb", one.mem[0].steady_mb);
        put_num(b, "rss_1_growth_mb", one.mem[0].growth_mb);
        put_int(b, "outcomes_1", one.outcomes);
    }
    if (has_many) {
        double ratio = many.rps / pg_ceiling, peak = 0, growth = -1e9;
        char label[64];

        for (int i = 0; i < many.workers; i++) {
            if (many.mem[i].peak_mb > peak)
                peak = many.mem[i].peak_mb;
            if (many.mem[i].growth_mb > growth)
                growth = many.mem[i].growth_mb;
        }
        snprintf(label, sizeof(label), "throughput, %d workers", many.workers);
        snprintf(text, sizeof(text), "%.0f requests/s", many.rps);
        row(label, text, "", "");
        snprintf(text, sizeof(text), "%.3f", ratio);
        row("  ratio to the PG ceiling", text, ">= 0.5",
            yes_no(ratio >= TARGET_PG_RATIO));
        snprintf(text, sizeof(text), "%.3f", many.rps / kafka_ceiling);
        row("  ratio to the Kafka ceiling", text, "", "");
        snprintf(text, sizeof(text), "%.1f MB, growth %+.1f MB", peak, growth);
        row("  largest worker RSS peak, growth", text, "< 64 MB",
            yes_no(peak < TARGET_RSS_MB && growth < TARGET_RSS_GROWTH_MB));
        put_int(b, "replicas", many.workers);
        put_num(b, "throughput_n_rps", many.rps);
        put_num(b, "throughput_n_wall_rps", many.wall_rps);
        put_num(b, "ratio_n_pg", ratio);
        put_num(b, "ratio_n_kafka", many.rps / kafka_ceiling);
        put_num(b, "rss_n_peak_mb", peak);
        put_num(b, "rss_n_growth_mb", growth);
        put_int(b, "outcomes_n", many.outcomes);
    }
    if (has_lat) {
        char label[80];

        snprintf(label, sizeof(label), "latency at %d/s for %d s (%ld)",
                 b->opt.rate, b->opt.latency_seconds, lat.received);
        snprintf(text, sizeof(text), "p50 %.1f, p95 %.1f ms", lat.p50, lat.p95);
        row(label, text, "", "");
        snprintf(text, sizeof(text), "%.1f ms", lat.p99);
        row("  p99", text, "< 50 ms", yes_no(lat.p99 < TARGET_P99_MS));
        snprintf(text, sizeof(text), "%.1f ms", lat.max);
        row("  max", text, "", "");
        put_num(b, "latency_rate", b->opt.rate);
        put_num(b, "latency_achieved_rate", lat.achieved_rate);
        put_num(b, "latency_p50_ms", lat.p50);
        put_num(b, "latency_p95_ms", lat.p95);
        put_num(b, "latency_p99_ms", lat.p99);
        put_num(b, "latency_max_ms", lat.max);
        put_int(b, "latency_answered", lat.received);
    }
    if (has_tim) {
        char label[80];

        snprintf(label, sizeof(label), "timers: %ld due at once", tim.fired);
        snprintf(text, sizeof(text), "%.2f s (%.2f s firing)", tim.seconds,
                 tim.fire_seconds);
        row(label, text, "< 10 s", yes_no(tim.seconds < TARGET_TIMERS_S));
        put_num(b, "timers_seconds", tim.seconds);
        put_num(b, "timers_fire_seconds", tim.fire_seconds);
        put_int(b, "timers_fired", tim.fired);
    } else if (!is_timers_measured) {
        row("timers", "not measured", "< 10 s", "-");
    }
    printf("\n");
    put_int(b, "n", b->opt.n);
    put_int(b, "partitions", b->partitions);
    put_int(b, "request_bytes", (long long)b->request_size);
    put_str(b, "kafka", b->is_mock ? "mock" : "broker");
    put_str(b, "postgresql", b->pg_version);
    put_str(b, "librdkafka", rd_kafka_version_str());
    put_str(b, "machine", machine_text);
    put_str(b, "load_start", load_start);
    put_str(b, "load_end", load_end);
    json_object_set_new(b->json, "void", json_boolean(b->is_void));
    if (b->opt.json_path != NULL &&
        json_dump_file(b->json, b->opt.json_path, JSON_INDENT(2)) != 0) {
        say("could not write %s", b->opt.json_path);
        status = 1;
    }
    if (status != 0)
        say("FAILED%s; worker logs are in %s",
            b->is_void ? " (void: an outcome was lost or doubled)" : "",
            b->tmpdir);
    json_decref(b->json);
    codec_destroy(b->codec);
    arena_destroy(b->arena);
    pg_stop(b);
    kafka_stop(b);
    free(b->base_conninfo);
    free(b->bootstrap);
    arena_destroy(env_arena);
    if (status == 0) {
        char *const argv_rm[] = {"/bin/rm", "-rf", b->tmpdir, NULL};

        run_wait(argv_rm, NULL, "/dev/null", NULL);
    }
    return status;
}

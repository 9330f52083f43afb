/*
 * What the files of mesh-worker-bench share: the run's state, the phases'
 * results, and the helpers each file offers the others.  The benchmark is
 * one program; these are its internal interfaces, not a library.
 */
#ifndef MW_BENCH_H
#define MW_BENCH_H

#include "arena.h"
#include "codec.h"
#include "embedded.h"
#include "ids.h"
#include "mw.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The mock cluster keeps about 5 MiB a partition; stay well below. */
#define MOCK_PARTITION_BUDGET (3 * 1024 * 1024)
#define MIN_PARTITIONS 64
#define MSP_COUNT 1000
/* Give up when no outcome arrived for this long. */
#define STALL_NS (90LL * 1000000000LL)
#define MAX_WORKERS 8

/* Targets: one worker's share of the two-connection PostgreSQL ceiling,
 * p99 request to event at up to 1,000/s and above, worker memory, and
 * 100,000 timers due at once. */
#define TARGET_PG_RATIO 0.6
#define TARGET_P99_MS_1000 25.0
#define TARGET_P99_MS_5000 50.0
#define TARGET_RSS_MB 64.0
#define TARGET_RSS_GROWTH_MB 8.0
#define TARGET_TIMERS_S 5.0

enum phase {
    PHASE_CEILING = 1,
    PHASE_KAFKA,
    PHASE_ONE,
    PHASE_MANY,
    PHASE_LATENCY,
    PHASE_TIMERS
};

/* Where Kafka comes from. */
enum kafka_tier {
    TIER_MOCK, /* librdkafka's mock cluster in this process */
    TIER_REAL, /* tests/kafka/broker.py, started by the benchmark */
    TIER_GIVEN /* MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS */
};

struct options {
    long n;
    int replicas;
    int latency_seconds;
    int rate;
    long timers;
    const char *json_path;
    const char *worker;
    const char *kafka; /* --kafka: "mock", "real" or NULL */
    bool is_quick;
};

struct bench {
    struct options opt;
    uint32_t tag;
    char tmpdir[PATH_MAX];
    char worker[PATH_MAX];
    /* Kafka */
    enum kafka_tier tier;
    char *bootstrap;
    bool is_mock;
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_t *admin;
    int partitions;
    pid_t broker_pid; /* broker.py when tier is TIER_REAL */
    int broker_stdin; /* its stdin: closing it stops the broker */
    /* PostgreSQL */
    char pg_dir[PATH_MAX];
    struct embedded_pg *pg; /* the private cluster, or NULL */
    char *base_conninfo;
    char pg_version[64];
    /* codec */
    struct codec *codec;
    struct mw_arena *arena;
    size_t request_size; /* average encoded request */
    json_t *json;
    bool is_void;
};

/* ---- bench_util.c: time, output, buffers, child processes ---- */

double seconds(int64_t ns);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* calloc that exits the benchmark when memory runs out. */
void *xcalloc(size_t n, size_t size);
void read_loadavg(char *out, size_t size);

/* A growing byte buffer for COPY data and connection strings. */
struct buf {
    char *p;
    size_t len, cap;
};

void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends bytes as a bytea literal in COPY text format (\\x...). */
void buf_bytea(struct buf *b, const void *data, size_t len);

int run_wait(char *const argv[], const char *user, const char *log,
             char *const envp[]);
/* Removes path and everything under it; quiet. */
void remove_tree(const char *path);

/* An environment: ours, with the given NAME=VALUE entries replacing. */
struct env {
    char **v;
    size_t n;
};

void env_init(struct env *e);
void env_set(struct env *e, const char *name, const char *value);
/* Frees every environment built; at exit. */
void env_free_all(void);

void put_num(struct bench *b, const char *key, double value);
void put_int(struct bench *b, const char *key, long long value);
void put_str(struct bench *b, const char *key, const char *value);

/* ---- bench_pg.c: PostgreSQL ---- */

/* The private cluster (the worker's embedded one) or the given server. */
int pg_start(struct bench *b);
void pg_stop(struct bench *b);
PGconn *pg_connect(const char *conninfo);
int pg_exec(PGconn *conn, const char *sql);
/* Creates database name afresh; returns its connection string or NULL. */
char *db_create(struct bench *b, const char *name);
void db_drop(struct bench *b, const char *name);
void db_name(const struct bench *b, const char *what, char *out, size_t size);

/* ---- bench_kafka.c: Kafka clients and topics ---- */

int kafka_start(struct bench *b);
void kafka_stop(struct bench *b);
int topic_create(struct bench *b, const char *name, int partitions);
/* Deletes topic on a broker; nothing on the mock cluster. */
void topic_drop(struct bench *b, const char *name);

/* The three topics of a phase. */
struct topics {
    char requests[128], events[128], dlq[128];
    char group[128];
};

int topics_create(struct bench *b, const char *what, struct topics *t);
void topics_drop(struct bench *b, const struct topics *t);
rd_kafka_t *producer_new(const struct bench *b, const char *linger);
int produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
            const void *value, size_t len);
/* produce, and *acked_ns (monotonic) set when the broker acknowledged it. */
int produce_acked(rd_kafka_t *rk, const char *topic, const void *key,
                  size_t key_len, const void *value, size_t len,
                  int64_t *acked_ns);
int flush_all(rd_kafka_t *rk);
rd_kafka_t *consumer_new_waiting(const struct bench *b, const char *topic,
                                 const char *fetch_wait);
rd_kafka_t *consumer_new(const struct bench *b, const char *topic);

/* ---- bench_broker.c: the real broker of tests/kafka ---- */

/* Starts broker.py; sets b->bootstrap.  0, or -1 having said why. */
int broker_start(struct bench *b);
/* Stops it and waits: broker.py removes its directory. */
void broker_stop(struct bench *b);

/* ---- bench_requests.c: the requests the benchmark sends ---- */

/* Text of one request, in storage owned by the caller. */
struct request_text {
    char request_id[IDS_UUID_LEN + 1];
    char customer_id[IDS_UUID_LEN + 1];
    char requested_by[64], msp_id[32], msp_domain[64], company[96];
    char primary[96], additional[96], destination[128], admin[128];
    const char *additional_list[1];
};

long index_of(const struct bench *b, enum phase phase, const char *id,
              size_t len);
void request_fill(const struct bench *b, enum phase phase, long index,
                  bool is_trial, struct request_text *t, struct mw_request *r);
int request_encode(struct bench *b, enum phase phase, long index, bool is_trial,
                   const void **out, size_t *len, struct request_text *t);
int preload(struct bench *b, enum phase phase, const char *topic, long from,
            long to, bool is_trial);

/* ---- bench_collect.c: the outcome collector ---- */

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
    /* Latency phase only (else NULL), per index: the event's Kafka
     * timestamp (the relay's produce call) and its occurred_at (the
     * worker's batch start), both epoch ms, and the arrival, epoch µs. */
    int64_t *relay_ms, *worker_ms, *received_wall_us;
    struct codec *codec;
    struct mw_arena *arena;
};

struct collector *collector_start(const struct bench *b, enum phase phase,
                                  const char *topic, const char *want, long n);
void collector_stop(struct collector *c);
int collector_wait(struct collector *c, long want);

/* ---- bench_workers.c: workers and their memory ---- */

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

/* Memory of worker i: peak (VmHWM), steady (median of the second half),
 * growth (mean of the last fifth minus mean of the second fifth), MB. */
struct memory {
    double peak_mb, steady_mb, growth_mb;
};

int workers_start(struct bench *b, struct worker_set *ws, int count,
                  struct env *env, const char *what);
void workers_stop(struct worker_set *ws);
void workers_free(struct worker_set *ws);
struct memory worker_memory(const struct worker_set *ws, int i);
/* The largest VmHWM of the set, MB. */
double workers_peak_mb(const struct worker_set *ws);
void worker_env(struct bench *b, struct env *env, const char *conninfo,
                const struct topics *t);

/* ---- bench_ceilings.c: PostgreSQL's and librdkafka's own limits ---- */

struct kafka_ceiling {
    double ceiling, produce_rps, consume_rps; /* messages/s */
};

int phase_ceiling(struct bench *b, double *ceiling);
int phase_kafka(struct bench *b, struct kafka_ceiling *out);

/* ---- bench_phases.c: the worker measured ---- */

struct throughput {
    double rps;      /* first outcome to last */
    double wall_rps; /* worker start to last outcome */
    double seconds;
    struct memory mem[MAX_WORKERS];
    int workers;
    long outcomes, duplicates, rejected;
};

/* p50 and p99 of one leg of the way, ms. */
struct leg {
    double p50, p99;
};

struct latency {
    double p50, p95, p99, max; /* ms */
    /* produce call to the broker's acknowledgement; to the worker's batch
     * start (occurred_at); batch start to the relay's produce call; the
     * relay's produce call to the arrival at the consumer */
    struct leg acked, to_worker, in_worker, to_consumer;
    long sent, received;
    double achieved_rate;
    double peak_mb; /* the worker's VmHWM */
};

struct timers {
    double seconds;      /* worker start to the last TrialConverted */
    double fire_seconds; /* first to last TrialConverted */
    long fired;
    double peak_mb; /* the firing worker's VmHWM */
};

int phase_throughput(struct bench *b, enum phase phase, int replicas,
                     struct throughput *out);
int phase_latency(struct bench *b, struct latency *out);
int phase_timers(struct bench *b, struct timers *out);

#endif

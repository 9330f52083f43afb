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
 * cluster in this process, the tests' real broker (--kafka real, started
 * and removed here), or the broker MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS
 * names; PostgreSQL is the worker's embedded cluster in a temporary
 * directory unless MESH_WORKER_DATABASE_URL names a server (a database
 * per phase is created there and dropped afterwards).  Every phase has
 * its own topics, group and database, so phases never see each other's
 * data.
 *
 * Invariant: a figure is only reported when every outcome arrived; a run
 * that lost or doubled input is void and exits 1.  Nothing here asserts a
 * time: targets are reported, never enforced.
 */
#include "bench.h"
#include "embedded_files.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static const char *yes_no(bool is_met)
{
    return is_met ? "yes" : "NO";
}

static void row(const char *figure, const char *value, const char *target,
                const char *met)
{
    printf("| %-44s | %-26s | %-12s | %-3s |\n", figure, value, target, met);
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: mesh-worker-bench [-n N] [--replicas R] "
               "[--latency-seconds S]\n"
               "                         [--rate R] [--timers N] [--json FILE] "
               "[--worker PATH]\n"
               "                         [--kafka mock|real] [--quick]\n"
               "\n"
               "Measures the worker against PostgreSQL's and librdkafka's own "
               "limits in\none run.  Kafka: --kafka, else "
               "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS, else an\nin-process mock "
               "cluster; PostgreSQL: MESH_WORKER_DATABASE_URL or a private "
               "cluster.\n"
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
               "  --kafka mock|real    the mock cluster, or a real broker "
               "started from\n"
               "                       tests/kafka/broker.py and removed "
               "afterwards\n"
               "  --quick              a smoke run: N=1000, 3 s at 200/s, "
               "500 timers\n"
               "\nExit status: 0 measured, 1 a run was void (an outcome was "
               "lost or doubled)\nor failed, 2 bad usage.\n");
}

/* The --quick sizes, where no option set them. */
static void apply_quick(struct options *o, bool has_n, bool has_l, bool has_r,
                        bool has_t)
{
    o->n = has_n ? o->n : 1000;
    o->latency_seconds = has_l ? o->latency_seconds : 3;
    o->rate = has_r ? o->rate : 200;
    o->timers = has_t ? o->timers : 500;
}

static bool is_valid(const struct options *o)
{
    return o->n >= 2 && o->n <= 100000000L && o->replicas >= 0 &&
           o->replicas <= MAX_WORKERS && o->latency_seconds >= 0 &&
           o->rate >= 1 && o->rate <= 1000000 && o->timers >= 0 &&
           (o->kafka == NULL || strcmp(o->kafka, "mock") == 0 ||
            strcmp(o->kafka, "real") == 0);
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
        {"kafka", required_argument, NULL, 'k'},
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
        case 'k':
            o->kafka = optarg;
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
    if (o->is_quick)
        apply_quick(o, has_n, has_l, has_r, has_t);
    if (optind != argc || !is_valid(o)) {
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

/* --kafka decides; without it, a given broker, else the mock cluster. */
static enum kafka_tier choose_tier(const struct options *o)
{
    const char *given = getenv("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS");

    if (o->kafka != NULL)
        return strcmp(o->kafka, "real") == 0 ? TIER_REAL : TIER_MOCK;
    return given != NULL && given[0] != '\0' ? TIER_GIVEN : TIER_MOCK;
}

static const char *tier_name(const struct bench *b)
{
    static const char *const names[] = {
        [TIER_MOCK] = "mock", [TIER_REAL] = "real", [TIER_GIVEN] = "given"};

    return names[b->tier];
}

/*
 * Partitions of each topic: no partition may hold more than a third of
 * what the mock cluster keeps.  The real broker gets the same count, so
 * that both tiers measure the same work.
 */
static int partitions_for(const struct bench *b)
{
    long need = (long)((b->opt.n * (long)(b->request_size * 2 + 200)) /
                       MOCK_PARTITION_BUDGET) +
                1;

    return need > MIN_PARTITIONS ? (int)need : MIN_PARTITIONS;
}

/* The run's state before any service starts; 0, or the exit status. */
static int setup(struct bench *b, int argc, char **argv)
{
    struct mw_error err;
    struct request_text t;
    const void *value;

    if (parse_options(argc, argv, &b->opt) < 0)
        return 2;
    if (find_worker(b, argv[0]) < 0) {
        say("cannot find the mesh-worker binary (%s); use --worker PATH",
            b->worker);
        return 2;
    }
    b->tier = choose_tier(&b->opt);
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
    if (request_encode(b, PHASE_KAFKA, 123456, false, &value, &b->request_size,
                       &t) < 0)
        return 1;
    b->partitions = partitions_for(b);
    return 0;
}

/* Every figure of a run. */
struct results {
    double pg_ceiling;
    struct kafka_ceiling kafka;
    struct throughput one, many;
    struct latency lat;
    struct timers tim;
    bool has_one, has_many, has_lat, has_tim, is_timers_measured;
    char load_start[64], load_end[64], machine[512];
    int64_t started;
};

/* The phases in order, each only when the ones before succeeded. */
static int run_phases(struct bench *b, struct results *r)
{
    if (phase_ceiling(b, &r->pg_ceiling) < 0 || phase_kafka(b, &r->kafka) < 0)
        return 1;
    r->has_one = phase_throughput(b, PHASE_ONE, 1, &r->one) == 0;
    if (!r->has_one)
        return 1;
    if (b->opt.replicas > 0) {
        r->has_many =
            phase_throughput(b, PHASE_MANY, b->opt.replicas, &r->many) == 0;
        if (!r->has_many)
            return 1;
    }
    if (b->opt.latency_seconds > 0) {
        r->has_lat = phase_latency(b, &r->lat) == 0;
        if (!r->has_lat)
            return 1;
    }
    r->is_timers_measured = b->opt.timers > 0 && has_scheduler();
    if (r->is_timers_measured) {
        r->has_tim = phase_timers(b, &r->tim) == 0;
        if (!r->has_tim)
            return 1;
    }
    return 0;
}

static void report_head(const struct bench *b, const struct results *r)
{
    printf("\nmesh-worker-bench: N=%ld, %d partitions, Kafka %s, "
           "PostgreSQL %s (%s)\n",
           b->opt.n, b->partitions,
           b->is_mock ? "mock cluster in-process" : b->bootstrap,
           b->pg_version[0] ? b->pg_version : "?",
           b->pg != NULL ? "private, default settings" : "given");
    if (b->tier == TIER_REAL)
        printf("Kafka: the real broker of tests/kafka (Apache Kafka, KRaft, "
               "one node)\n");
    printf("librdkafka %s; machine: %s\n", rd_kafka_version_str(), r->machine);
    printf("load average (1, 5, 15 min): %s at start, %s at end; %.0f s\n\n",
           r->load_start, r->load_end, seconds(mw_monotonic_ns() - r->started));
    printf("| %-44s | %-26s | %-12s | %-3s |\n", "figure", "value", "target",
           "met");
    printf("|%s|%s|%s|%s|\n", "----------------------------------------------",
           "----------------------------", "--------------", "-----");
}

static void report_ceilings(const struct results *r)
{
    char text[128];

    snprintf(text, sizeof(text), "%.0f requests/s", r->pg_ceiling);
    row("PG ceiling (COPY, best of 1 and 2 conns)", text, "", "");
    snprintf(text, sizeof(text), "%.0f msgs/s", r->kafka.ceiling);
    row("Kafka ceiling (produce then consume)", text, "", "");
    snprintf(text, sizeof(text), "%.0f / %.0f msgs/s", r->kafka.produce_rps,
             r->kafka.consume_rps);
    row("  produce / consume alone", text, "", "");
}

static void report_one(struct bench *b, const struct results *r)
{
    const struct throughput *one = &r->one;
    double ratio = one->rps / r->pg_ceiling;
    char text[128];

    snprintf(text, sizeof(text), "%.0f requests/s", one->rps);
    row("throughput, 1 worker", text, "", "");
    snprintf(text, sizeof(text), "%.0f requests/s", one->wall_rps);
    row("  including start-up (3 s group join)", text, "", "");
    snprintf(text, sizeof(text), "%.3f", ratio);
    row("  ratio to the PG ceiling", text, ">= 0.6",
        yes_no(ratio >= TARGET_PG_RATIO));
    snprintf(text, sizeof(text), "%.3f", one->rps / r->kafka.ceiling);
    row("  ratio to the Kafka ceiling", text, "", "");
    snprintf(text, sizeof(text), "%.1f MB", one->mem[0].peak_mb);
    row("  worker RSS peak (backlog at start)", text, "< 64 MB",
        yes_no(one->mem[0].peak_mb < TARGET_RSS_MB));
    snprintf(text, sizeof(text), "%.1f MB, %+.1f MB", one->mem[0].steady_mb,
             one->mem[0].growth_mb);
    row("  worker RSS steady, growth over the run", text, "flat (< 8 MB)",
        yes_no(one->mem[0].growth_mb < TARGET_RSS_GROWTH_MB));
    put_num(b, "throughput_1_rps", one->rps);
    put_num(b, "throughput_1_wall_rps", one->wall_rps);
    put_num(b, "throughput_1_seconds", one->seconds);
    put_num(b, "ratio_1_pg", ratio);
    put_num(b, "ratio_1_kafka", one->rps / r->kafka.ceiling);
    put_num(b, "rss_1_peak_mb", one->mem[0].peak_mb);
    put_num(b, "rss_1_steady_mb", one->mem[0].steady_mb);
    put_num(b, "rss_1_growth_mb", one->mem[0].growth_mb);
    put_int(b, "outcomes_1", one->outcomes);
}

static void report_many(struct bench *b, const struct results *r)
{
    const struct throughput *many = &r->many;
    double ratio = many->rps / r->pg_ceiling, peak = 0, growth = -1e9;
    char label[64], text[128];

    for (int i = 0; i < many->workers; i++) {
        if (many->mem[i].peak_mb > peak)
            peak = many->mem[i].peak_mb;
        if (many->mem[i].growth_mb > growth)
            growth = many->mem[i].growth_mb;
    }
    snprintf(label, sizeof(label), "throughput, %d workers", many->workers);
    snprintf(text, sizeof(text), "%.0f requests/s", many->rps);
    row(label, text, "", "");
    snprintf(text, sizeof(text), "%.3f", ratio);
    row("  ratio to the PG ceiling", text, ">= 0.6",
        yes_no(ratio >= TARGET_PG_RATIO));
    snprintf(text, sizeof(text), "%.3f", many->rps / r->kafka.ceiling);
    row("  ratio to the Kafka ceiling", text, "", "");
    snprintf(text, sizeof(text), "%.1f MB, growth %+.1f MB", peak, growth);
    row("  largest worker RSS peak, growth", text, "< 64 MB",
        yes_no(peak < TARGET_RSS_MB && growth < TARGET_RSS_GROWTH_MB));
    put_int(b, "replicas", many->workers);
    put_num(b, "throughput_n_rps", many->rps);
    put_num(b, "throughput_n_wall_rps", many->wall_rps);
    put_num(b, "ratio_n_pg", ratio);
    put_num(b, "ratio_n_kafka", many->rps / r->kafka.ceiling);
    put_num(b, "rss_n_peak_mb", peak);
    put_num(b, "rss_n_growth_mb", growth);
    put_int(b, "outcomes_n", many->outcomes);
}

/* One leg of the latency, p50 / p99, in the table and the JSON. */
static void report_leg(struct bench *b, const char *key, const char *label,
                       const struct leg *leg)
{
    char text[64], name[64];

    snprintf(text, sizeof(text), "p50 %.1f, p99 %.1f ms", leg->p50, leg->p99);
    row(label, text, "", "");
    snprintf(name, sizeof(name), "latency_%s_p50_ms", key);
    put_num(b, name, leg->p50);
    snprintf(name, sizeof(name), "latency_%s_p99_ms", key);
    put_num(b, name, leg->p99);
}

static void report_latency(struct bench *b, const struct results *r)
{
    const struct latency *lat = &r->lat;
    /* The stricter target holds up to 1,000 requests/s. */
    double p99_target =
        b->opt.rate <= 1000 ? TARGET_P99_MS_1000 : TARGET_P99_MS_5000;
    char label[80], text[128], target[32];

    snprintf(label, sizeof(label), "latency at %d/s for %d s (%ld)",
             b->opt.rate, b->opt.latency_seconds, lat->received);
    snprintf(text, sizeof(text), "p50 %.1f, p95 %.1f ms", lat->p50, lat->p95);
    row(label, text, "", "");
    snprintf(text, sizeof(text), "%.1f ms", lat->p99);
    snprintf(target, sizeof(target), "< %.0f ms", p99_target);
    row("  p99", text, target, yes_no(lat->p99 < p99_target));
    snprintf(text, sizeof(text), "%.1f ms", lat->max);
    row("  max", text, "", "");
    report_leg(b, "acked", "  leg: produce call to broker ack", &lat->acked);
    report_leg(b, "to_worker", "  leg: produce call to worker batch",
               &lat->to_worker);
    report_leg(b, "in_worker", "  leg: worker batch to relay produce",
               &lat->in_worker);
    report_leg(b, "to_consumer", "  leg: relay produce to consumer",
               &lat->to_consumer);
    snprintf(text, sizeof(text), "%.1f MB", lat->peak_mb);
    row("  worker RSS peak", text, "< 64 MB",
        yes_no(lat->peak_mb < TARGET_RSS_MB));
    put_num(b, "latency_rate", b->opt.rate);
    put_num(b, "latency_achieved_rate", lat->achieved_rate);
    put_num(b, "latency_p50_ms", lat->p50);
    put_num(b, "latency_p95_ms", lat->p95);
    put_num(b, "latency_p99_ms", lat->p99);
    put_num(b, "latency_max_ms", lat->max);
    put_num(b, "rss_latency_peak_mb", lat->peak_mb);
    put_int(b, "latency_answered", lat->received);
}

static void report_timers(struct bench *b, const struct results *r)
{
    const struct timers *tim = &r->tim;
    char label[80], text[128];

    if (!r->has_tim) {
        if (!r->is_timers_measured)
            row("timers", "not measured", "< 5 s", "-");
        return;
    }
    snprintf(label, sizeof(label), "timers: %ld due at once", tim->fired);
    snprintf(text, sizeof(text), "%.2f s (%.2f s firing)", tim->seconds,
             tim->fire_seconds);
    row(label, text, "< 5 s", yes_no(tim->seconds < TARGET_TIMERS_S));
    snprintf(text, sizeof(text), "%.1f MB", tim->peak_mb);
    row("  worker RSS peak (creating, firing)", text, "< 64 MB",
        yes_no(tim->peak_mb < TARGET_RSS_MB));
    put_num(b, "timers_seconds", tim->seconds);
    put_num(b, "timers_fire_seconds", tim->fire_seconds);
    put_num(b, "rss_timers_peak_mb", tim->peak_mb);
    put_int(b, "timers_fired", tim->fired);
}

/* The table on stdout, and the JSON file; 0, or 1 when it was not written. */
static int report(struct bench *b, const struct results *r)
{
    report_head(b, r);
    report_ceilings(r);
    if (r->has_one)
        report_one(b, r);
    if (r->has_many)
        report_many(b, r);
    if (r->has_lat)
        report_latency(b, r);
    report_timers(b, r);
    printf("\n");
    put_int(b, "n", b->opt.n);
    put_int(b, "partitions", b->partitions);
    put_int(b, "request_bytes", (long long)b->request_size);
    put_str(b, "kafka", tier_name(b));
    put_str(b, "postgresql", b->pg_version);
    put_str(b, "librdkafka", rd_kafka_version_str());
    put_str(b, "machine", r->machine);
    put_str(b, "load_start", r->load_start);
    put_str(b, "load_end", r->load_end);
    json_object_set_new(b->json, "void", json_boolean(b->is_void));
    if (b->opt.json_path != NULL &&
        json_dump_file(b->json, b->opt.json_path, JSON_INDENT(2)) != 0) {
        say("could not write %s", b->opt.json_path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench bench, *b = &bench;
    struct results r;
    int status;

    memset(b, 0, sizeof(*b));
    memset(&r, 0, sizeof(r));
    r.started = mw_monotonic_ns();
    signal(SIGPIPE, SIG_IGN);
    status = setup(b, argc, argv);
    if (status != 0)
        return status;
    read_loadavg(r.load_start, sizeof(r.load_start));
    machine(r.machine, sizeof(r.machine));
    if (kafka_start(b) < 0 || pg_start(b) < 0) {
        status = 1;
        goto done;
    }
    say("kafka %s (%s), %d partitions; worker %s; logs in %s",
        b->is_mock ? "mock cluster in this process" : "broker", b->bootstrap,
        b->partitions, b->worker, b->tmpdir);
    status = run_phases(b, &r);
    read_loadavg(r.load_end, sizeof(r.load_end));
    status |= report(b, &r);
done:
    if (status != 0)
        say("FAILED%s; worker logs are in %s",
            b->is_void ? " (void: an outcome was lost or doubled)" : "",
            b->tmpdir);
    json_decref(b->json);
    codec_destroy(b->codec);
    arena_destroy(b->arena);
    pg_stop(b);
    kafka_stop(b);
    env_free_all();
    if (status == 0)
        remove_tree(b->tmpdir);
    return status;
}

/*
 * The workers under test: mesh-worker run as child processes with a
 * phase's environment, and a thread sampling their VmRSS and VmHWM every
 * 100 ms.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
        mw_sleep_ms(100);
    }
    return NULL;
}

/*
 * Forks and execs one worker and returns its pid once the exec is done,
 * or -1.  Until then the child is a copy of the benchmark, whose
 * memory (the mock cluster's topics among it) its VmRSS and VmHWM would
 * show: a pipe closed by the exec tells when the worker is itself.
 */
static pid_t start_one(struct bench *b, struct env *env, const char *log)
{
    int sync[2], child_errno = 0;
    ssize_t got;
    pid_t pid;

    if (pipe2(sync, O_CLOEXEC) != 0) {
        say("could not start the worker: %s", strerror(errno));
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        say("could not start the worker: %s", strerror(errno));
        close(sync[0]);
        close(sync[1]);
        return -1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        char *argv[] = {b->worker, "run", NULL};

        close(sync[0]);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execve(b->worker, argv, env->v);
        child_errno = errno;
        if (write(sync[1], &child_errno, sizeof(child_errno)) < 0)
            _exit(126);
        _exit(127);
    }
    close(sync[1]);
    do {
        got = read(sync[0], &child_errno, sizeof(child_errno));
    } while (got < 0 && errno == EINTR);
    close(sync[0]);
    if (got > 0) {
        say("could not run %s: %s", b->worker, strerror(child_errno));
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* Starts count workers with env; their logs go to tmpdir/<what>-<i>.log. */
int workers_start(struct bench *b, struct worker_set *ws, int count,
                  struct env *env, const char *what)
{
    memset(ws, 0, sizeof(*ws));
    for (int i = 0; i < count; i++) {
        char log[PATH_MAX + 64];
        pid_t pid;

        snprintf(log, sizeof(log), "%s/%s-%d.log", b->tmpdir, what, i);
        pid = start_one(b, env, log);
        if (pid < 0)
            return -1;
        ws->pids[ws->count++] = pid;
    }
    if (pthread_create(&ws->sampler, NULL, sampler_main, ws) != 0) {
        say("could not start a thread");
        return -1;
    }
    return 0;
}

/* SIGTERM, wait up to 30 s, then SIGKILL.  Stops the sampler first. */
void workers_stop(struct worker_set *ws)
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
            mw_sleep_ms(100);
        }
        kill(ws->pids[i], SIGKILL);
        waitpid(ws->pids[i], &status, 0);
    reaped:;
    }
}

void workers_free(struct worker_set *ws)
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

struct memory worker_memory(const struct worker_set *ws, int i)
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
    /* Within the second half, so that the start-up (a group join of
     * seconds in a short run) does not look like growth. */
    m.growth_mb = (mean_kb(ws->samples[i], n * 3 / 4, n) -
                   mean_kb(ws->samples[i], n / 2, n * 3 / 4)) /
                  1024.0;
    return m;
}

double workers_peak_mb(const struct worker_set *ws)
{
    long peak = 0;

    for (int i = 0; i < ws->count; i++) {
        if (ws->hwm_kb[i] > peak)
            peak = ws->hwm_kb[i];
    }
    return (double)peak / 1024.0;
}

/* The worker's environment for a phase. */
void worker_env(struct bench *b, struct env *env, const char *conninfo,
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

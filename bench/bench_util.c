/*
 * The benchmark's small helpers: the clock, messages, growing buffers,
 * child processes run to completion, environments for the workers, and the
 * JSON figures.  Out of memory ends the benchmark: it has nothing to save.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

double seconds(int64_t ns)
{
    return (double)ns / 1e9;
}

void say(const char *fmt, ...)
{
    va_list ap;

    fputs("mesh-worker-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (p == NULL) {
        say("out of memory");
        exit(1);
    }
    return p;
}

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

void buf_printf(struct buf *b, const char *fmt, ...)
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
void buf_bytea(struct buf *b, const void *data, size_t len)
{
    buf_reserve(b, 3 + 2 * len);
    b->p[b->len++] = '\\';
    b->p[b->len++] = '\\';
    b->p[b->len++] = 'x';
    mw_hex_encode(data, len, b->p + b->len);
    b->len += 2 * len;
}

void read_loadavg(char *out, size_t size)
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

/*
 * Runs argv and waits; as user when not NULL (we are root then).  Output
 * goes to log (appended).  Returns the exit status or -1.
 */
int run_wait(char *const argv[], const char *user, const char *log,
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

void remove_tree(const char *path)
{
    char *const argv[] = {"/bin/rm", "-rf", (char *)path, NULL};

    run_wait(argv, NULL, "/dev/null", NULL);
}

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

void env_set(struct env *e, const char *name, const char *value)
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

void env_free_all(void)
{
    arena_destroy(env_arena);
    env_arena = NULL;
}

void env_init(struct env *e)
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
void put_num(struct bench *b, const char *key, double value)
{
    json_object_set_new(b->json, key, json_real(value));
}

void put_int(struct bench *b, const char *key, long long value)
{
    json_object_set_new(b->json, key, json_integer(value));
}

void put_str(struct bench *b, const char *key, const char *value)
{
    json_object_set_new(b->json, key, json_string(value));
}

/*
 * The real broker for --kafka real: tests/kafka/broker.py, one Apache Kafka
 * KRaft node, as a child process.  The benchmark holds the script's stdin;
 * when that closes (the run ends, or the benchmark dies), broker.py stops
 * the broker and removes its directory.  The pipes are close-on-exec so
 * that no worker or PostgreSQL server keeps them open.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef BENCH_BROKER_SCRIPT
#define BENCH_BROKER_SCRIPT "tests/kafka/broker.py"
#endif

static const char bootstrap_prefix[] = "bootstrap.servers=";

/* Child side: stdin from in, stdout to out, stderr to log; never returns. */
static void broker_exec(int in, int out, const char *log)
{
    char *const argv[] = {"python3", BENCH_BROKER_SCRIPT, NULL};
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    if (fd >= 0)
        dup2(fd, STDERR_FILENO);
    execvp(argv[0], argv);
    _exit(127);
}

/* Reads broker.py's output until it names the bootstrap address. */
static int read_bootstrap(struct bench *b, int out)
{
    FILE *f = fdopen(out, "r");
    char line[512];

    if (f == NULL) {
        close(out);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, bootstrap_prefix, strlen(bootstrap_prefix)) != 0)
            continue;
        line[strcspn(line, "\r\n")] = '\0';
        b->bootstrap = strdup(line + strlen(bootstrap_prefix));
        break;
    }
    fclose(f);
    return b->bootstrap != NULL ? 0 : -1;
}

int broker_start(struct bench *b)
{
    int in[2], out[2];
    char log[PATH_MAX + 32];

    if (access(BENCH_BROKER_SCRIPT, R_OK) != 0) {
        say("cannot start the real broker: %s: %s", BENCH_BROKER_SCRIPT,
            strerror(errno));
        return -1;
    }
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        say("could not make a pipe: %s", strerror(errno));
        return -1;
    }
    snprintf(log, sizeof(log), "%s/broker.log", b->tmpdir);
    say("starting the real broker (%s); its log is %s", BENCH_BROKER_SCRIPT,
        log);
    b->broker_pid = fork();
    if (b->broker_pid < 0) {
        say("could not start the real broker: %s", strerror(errno));
        return -1;
    }
    if (b->broker_pid == 0)
        broker_exec(in[0], out[1], log);
    close(in[0]);
    close(out[1]);
    b->broker_stdin = in[1];
    if (read_bootstrap(b, out[0]) < 0) {
        say("the real broker did not start; see %s", log);
        return -1;
    }
    return 0;
}

void broker_stop(struct bench *b)
{
    int status;

    if (b->broker_pid <= 0)
        return;
    /* The end of stdin is broker.py's "quit". */
    close(b->broker_stdin);
    for (int tries = 0; tries < 600; tries++) {
        if (waitpid(b->broker_pid, &status, WNOHANG) == b->broker_pid) {
            b->broker_pid = 0;
            return;
        }
        mw_sleep_ms(100);
    }
    say("the real broker did not stop within 60 s; terminating it");
    kill(b->broker_pid, SIGTERM);
    waitpid(b->broker_pid, &status, 0);
    b->broker_pid = 0;
}

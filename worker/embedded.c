/*
 * Embedded defaults: librdkafka's mock cluster and a private PostgreSQL.
 *
 * The PostgreSQL cluster lives in <data dir>/postgresql and listens on a
 * Unix socket in <data dir>/run only, so it never collides with another
 * server on the machine.  As root the server runs as the "postgres" user;
 * when that user cannot enter the data directory (one below a 0700
 * directory such as mktemp makes), the cluster is kept in the postgres
 * user's home instead, under mesh-worker/<id of the data directory>, and
 * <data dir>/postgresql links to it.  Programs are run with fork/exec and
 * an argument vector, never through a shell.  Only a server this process
 * started is stopped on exit.
 */
#include "embedded.h"

#include "kafka.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct embedded_kafka {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster;
    char *bootstraps;
};

struct embedded_kafka *embedded_kafka_start(const struct mw_config *cfg,
                                            struct mw_error *err)
{
    struct embedded_kafka *ek = calloc(1, sizeof(*ek));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    const char *topics[3] = {cfg->topic_requests, cfg->topic_events,
                             cfg->topic_dlq};

    if (ek == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_error_no_memory(err);
        return NULL;
    }
    /* The mock cluster needs a client handle for its logging only. */
    rd_kafka_conf_set_log_cb(conf, kafka_log);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    ek->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (ek->rk == NULL) {
        mw_error_set(err, MW_ERR_KAFKA, false,
                     "could not start the embedded Kafka");
        mw_error_detail(err, "%s", errstr);
        free(ek);
        return NULL;
    }
    ek->mcluster = rd_kafka_mock_cluster_new(ek->rk, 1);
    if (ek->mcluster == NULL) {
        mw_error_set(err, MW_ERR_KAFKA, false,
                     "could not start the embedded Kafka");
        embedded_kafka_stop(ek);
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        int partitions = i == 2 ? 1 : cfg->embedded_partitions;
        rd_kafka_resp_err_t kerr =
            rd_kafka_mock_topic_create(ek->mcluster, topics[i], partitions, 1);

        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            mw_error_set(err, MW_ERR_KAFKA, false,
                         "could not create topic %s in the embedded Kafka",
                         topics[i]);
            mw_error_detail(err, "%s", rd_kafka_err2str(kerr));
            embedded_kafka_stop(ek);
            return NULL;
        }
    }
    ek->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(ek->mcluster));
    return ek;
}

const char *embedded_kafka_bootstraps(const struct embedded_kafka *ek)
{
    return ek->bootstraps;
}

void embedded_kafka_stop(struct embedded_kafka *ek)
{
    if (ek == NULL)
        return;
    if (ek->mcluster != NULL)
        rd_kafka_mock_cluster_destroy(ek->mcluster);
    if (ek->rk != NULL)
        rd_kafka_destroy(ek->rk);
    free(ek->bootstraps);
    free(ek);
}

struct embedded_pg {
    char bindir[PATH_MAX];
    char pgdata[PATH_MAX + 128];
    char rundir[PATH_MAX + 128];
    char logfile[PATH_MAX + 128];
    char conninfo[PATH_MAX + 256];
    const char *run_as; /* "postgres" when we are root, else NULL */
    int started;        /* we started it, so we stop it */
};

/* Finds the newest /usr/lib/postgresql/N/bin holding pg_ctl. */
static int find_bindir(char *out, size_t len)
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

/*
 * Runs argv (argv[0] a program in pg->bindir), as the postgres user when
 * root, with output appended to the log file.  Returns the exit status, or
 * -1 when it could not be run.
 */
static int run(const struct embedded_pg *pg, char *const argv[])
{
    char program[PATH_MAX + 64];
    pid_t pid;
    int status;

    snprintf(program, sizeof(program), "%s/%s", pg->bindir, argv[0]);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(pg->logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        if (pg->run_as != NULL) {
            const struct passwd *pw = getpwnam(pg->run_as);

            if (pw == NULL || setgid(pw->pw_gid) != 0 ||
                setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        execv(program, argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * Finds the first directory on the way to path (path included) that the
 * user cannot enter, as that user would: a child process takes the user's
 * identity and tries each prefix.  Writes it to blocked and returns 1;
 * returns 0 when the user reaches path, -1 when the check could not run.
 */
static int find_blocking_dir(const char *path, const struct passwd *user,
                             char *blocked, size_t len)
{
    int fds[2];
    pid_t pid;
    int status;
    ssize_t got;

    if (pipe(fds) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        char prefix[PATH_MAX];
        size_t n = strlen(path);

        close(fds[0]);
        if (setgid(user->pw_gid) != 0 || setuid(user->pw_uid) != 0)
            _exit(2);
        for (size_t i = 1; i <= n; i++) {
            if (i < n && path[i] != '/')
                continue;
            if (i >= sizeof(prefix))
                _exit(2);
            memcpy(prefix, path, i);
            prefix[i] = '\0';
            if (access(prefix, X_OK) != 0 ||
                (i == n && access(prefix, R_OK | W_OK) != 0)) {
                if (write(fds[1], prefix, i) != (ssize_t)i)
                    _exit(2);
                _exit(1);
            }
        }
        _exit(0);
    }
    close(fds[1]);
    got = read(fds[0], blocked, len - 1);
    close(fds[0]);
    blocked[got > 0 ? got : 0] = '\0';
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1)
        return -1;
    return WEXITSTATUS(status);
}

static int make_dir(const char *path, const struct passwd *owner, mode_t mode,
                    struct mw_error *err)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not create directory \"%s\"", path);
        mw_error_detail(err, "%s", strerror(errno));
        mw_error_hint(err, "Set MESH_WORKER_DATA_DIR to a writable place.");
        return -1;
    }
    if (owner != NULL && chown(path, owner->pw_uid, owner->pw_gid) < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not hand \"%s\" to the postgres user", path);
        mw_error_detail(err, "%s", strerror(errno));
        return -1;
    }
    return 0;
}

/* FNV-1a: a stable name for a data directory's relocated cluster. */
static unsigned long long path_id(const char *path)
{
    unsigned long long h = 14695981039346656037ULL;

    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

/*
 * Chooses where the cluster's files go (out): the data directory base, or,
 * when owner (the user the server runs as) cannot enter it, a directory
 * of its own in owner's home that base/postgresql links to.
 */
static int choose_cluster_dir(const char *base, const struct passwd *owner,
                              char *out, size_t len, struct mw_error *err)
{
    char blocked[PATH_MAX], home_blocked[PATH_MAX], parent[PATH_MAX + 16];
    char link[PATH_MAX + 32], target[PATH_MAX + 96];
    int found;
    struct stat st;

    snprintf(out, len, "%s", base);
    if (owner == NULL)
        return 0;
    found = find_blocking_dir(base, owner, blocked, sizeof(blocked));
    if (found == 0)
        return 0;
    if (found < 0 || find_blocking_dir(owner->pw_dir, owner, home_blocked,
                                       sizeof(home_blocked)) != 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "cannot run the embedded PostgreSQL with "
                     "MESH_WORKER_DATA_DIR \"%s\"",
                     base);
        mw_error_detail(err,
                        "The %s user, which the server runs as, cannot "
                        "enter \"%s\", and its home \"%s\" is not usable "
                        "either.",
                        owner->pw_name, found < 0 ? base : blocked,
                        owner->pw_dir);
        mw_error_hint(err,
                      "Set MESH_WORKER_DATA_DIR to a directory the %s user "
                      "can reach (for example under /var/lib), or set "
                      "MESH_WORKER_DATABASE_URL.",
                      owner->pw_name);
        return -1;
    }
    snprintf(parent, sizeof(parent), "%s/mesh-worker", owner->pw_dir);
    snprintf(out, len, "%s/%016llx", parent, path_id(base));
    if (make_dir(parent, owner, 0700, err) < 0 ||
        make_dir(out, owner, 0700, err) < 0)
        return -1;
    snprintf(link, sizeof(link), "%s/postgresql", base);
    snprintf(target, sizeof(target), "%s/postgresql", out);
    if (lstat(link, &st) == 0 && !S_ISLNK(st.st_mode)) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "cannot run the embedded PostgreSQL in \"%s\"", link);
        mw_error_detail(err,
                        "The %s user, which the server runs as, cannot "
                        "enter \"%s\".",
                        owner->pw_name, blocked);
        mw_error_hint(err,
                      "Move the cluster to a directory the %s user can "
                      "reach and set MESH_WORKER_DATA_DIR to it.",
                      owner->pw_name);
        return -1;
    }
    if (lstat(link, &st) < 0 && symlink(target, link) < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not link \"%s\" to \"%s\"", link, target);
        mw_error_detail(err, "%s", strerror(errno));
        return -1;
    }
    log_info("embedded",
             "the postgres user cannot enter the data directory; keeping the "
             "embedded PostgreSQL in its home",
             LF_STR("path", out), LF_STR("blocked_by", blocked));
    return 0;
}

/* Decides who runs the server: initdb refuses to run as root, so root
 * hands the cluster to the postgres user.  Returns -1 with err set. */
static int choose_owner(struct embedded_pg *pg, const struct passwd **owner,
                        struct mw_error *err)
{
    *owner = NULL;
    if (find_bindir(pg->bindir, sizeof(pg->bindir)) < 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "cannot run the embedded PostgreSQL: no server found");
        mw_error_detail(err, "No /usr/lib/postgresql/*/bin/pg_ctl exists.");
        mw_error_hint(err, "Install Debian's postgresql package "
                           "(scripts/install-deps.sh) or set "
                           "MESH_WORKER_DATABASE_URL.");
        return -1;
    }
    if (geteuid() != 0)
        return 0;
    pg->run_as = "postgres";
    *owner = getpwnam(pg->run_as);
    if (*owner == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "cannot run the embedded PostgreSQL as root");
        mw_error_detail(err, "There is no \"postgres\" user to run it.");
        mw_error_hint(err, "Run as another user or set "
                           "MESH_WORKER_DATABASE_URL.");
        return -1;
    }
    return 0;
}

/* Makes the directories under data_dir and names the cluster, socket
 * and log paths in pg.  Returns -1 with err set. */
static int lay_out(struct embedded_pg *pg, const char *data_dir,
                   const struct passwd *owner, struct mw_error *err)
{
    char base[PATH_MAX], cluster[PATH_MAX + 64];
    int fd;

    if (make_dir(data_dir, owner, 0755, err) < 0)
        return -1;
    if (realpath(data_dir, base) == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not resolve MESH_WORKER_DATA_DIR \"%s\"", data_dir);
        mw_error_detail(err, "%s", strerror(errno));
        return -1;
    }
    if (choose_cluster_dir(base, owner, cluster, sizeof(cluster), err) < 0)
        return -1;
    snprintf(pg->pgdata, sizeof(pg->pgdata), "%s/postgresql", cluster);
    snprintf(pg->rundir, sizeof(pg->rundir), "%s/run", cluster);
    snprintf(pg->logfile, sizeof(pg->logfile), "%s/postgresql.log", cluster);
    /* A Unix socket path has at most 107 bytes. */
    if (strlen(pg->rundir) + strlen("/.s.PGSQL.5432") > 107) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "MESH_WORKER_DATA_DIR is too long for a socket path");
        mw_error_detail(err, "The socket would be %s/.s.PGSQL.5432.",
                        pg->rundir);
        mw_error_hint(err, "Use a data directory with a shorter path.");
        return -1;
    }
    if (make_dir(pg->rundir, owner, 0755, err) < 0)
        return -1;
    fd = open(pg->logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (owner != NULL && fchown(fd, owner->pw_uid, owner->pw_gid))
            log_warn("embedded", "could not hand the log to postgres");
        close(fd);
    }
    return 0;
}

/* Runs initdb unless the cluster exists.  Returns -1 with err set. */
static int init_cluster(struct embedded_pg *pg, const struct passwd *owner,
                        struct mw_error *err)
{
    char version_file[PATH_MAX + 160];
    char *const initdb[] = {"initdb",
                            "-D",
                            pg->pgdata,
                            "--auth=trust",
                            "--username=postgres",
                            "--encoding=UTF8",
                            "--no-locale",
                            "--no-sync",
                            NULL};
    struct stat st;

    snprintf(version_file, sizeof(version_file), "%s/PG_VERSION", pg->pgdata);
    if (stat(version_file, &st) == 0)
        return 0;
    log_info("embedded", "initialising the embedded PostgreSQL",
             LF_STR("path", pg->pgdata));
    if (make_dir(pg->pgdata, owner, 0700, err) < 0)
        return -1;
    if (run(pg, initdb) != 0) {
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "could not initialise the embedded PostgreSQL");
        mw_error_hint(err, "See %s.", pg->logfile);
        return -1;
    }
    return 0;
}

/* Starts the server unless it runs already.  Returns -1 with err set. */
static int start_server(struct embedded_pg *pg, struct mw_error *err)
{
    char opts[PATH_MAX + 256];
    char *const status[] = {"pg_ctl", "-D", pg->pgdata, "status", NULL};
    char *const start[] = {"pg_ctl", "-D", pg->pgdata, "-l", pg->logfile, "-w",
                           "-t",     "60", "-o",       opts, "start",     NULL};

    if (run(pg, status) == 0) {
        log_info("embedded", "reusing the embedded PostgreSQL",
                 LF_STR("path", pg->pgdata));
        return 0;
    }
    snprintf(opts, sizeof(opts),
             "-c listen_addresses= -c unix_socket_directories=%s -p 5432",
             pg->rundir);
    if (run(pg, start) != 0) {
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "could not start the embedded PostgreSQL");
        mw_error_hint(err, "See %s.", pg->logfile);
        return -1;
    }
    pg->started = 1;
    log_info("embedded", "embedded PostgreSQL started",
             LF_STR("path", pg->pgdata), LF_STR("socket", pg->rundir));
    return 0;
}

struct embedded_pg *embedded_pg_start(const char *data_dir,
                                      struct mw_error *err)
{
    struct embedded_pg *pg = calloc(1, sizeof(*pg));
    const struct passwd *owner;

    if (pg == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    if (choose_owner(pg, &owner, err) < 0 ||
        lay_out(pg, data_dir, owner, err) < 0 ||
        init_cluster(pg, owner, err) < 0) {
        free(pg);
        return NULL;
    }
    snprintf(pg->conninfo, sizeof(pg->conninfo),
             "host=%s port=5432 user=postgres dbname=postgres", pg->rundir);
    if (start_server(pg, err) < 0) {
        free(pg);
        return NULL;
    }
    return pg;
}

const char *embedded_pg_conninfo(const struct embedded_pg *pg)
{
    return pg->conninfo;
}

void embedded_pg_stop(struct embedded_pg *pg)
{
    if (pg == NULL)
        return;
    if (pg->started) {
        char *const stop[] = {"pg_ctl", "-D", pg->pgdata, "-m",
                              "fast",   "-w", "stop",     NULL};

        if (run(pg, stop) != 0)
            log_warn("embedded", "could not stop the embedded PostgreSQL",
                     LF_STR("log", pg->logfile));
        else
            log_info("embedded", "embedded PostgreSQL stopped");
    }
    free(pg);
}

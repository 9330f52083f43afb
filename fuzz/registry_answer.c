/*
 * Fuzz target: the Schema Registry's answers, as raw HTTP responses.  A
 * thread of this process listens on a loopback port and answers each
 * request with the next answer of the input, then closes; the registry
 * client talks to it over libcurl as it would to a registry.  After the
 * first byte, an input is one or more answers separated by SEPARATOR; the
 * last one is repeated for every further request (the client retries).
 * The first byte chooses the request:
 *
 *   bit 0 clear  a writer schema by id (GET /schemas/ids/N), through a
 *                codec with this registry attached, so that a schema the
 *                answer holds is parsed and resolved as when consuming
 *   bit 0 set    the id of the topic's schema (POST /subjects/...),
 *                registered (bit 1 set) or looked up
 *
 * The client's back-off between retries is skipped (nanosleep below) so
 * that a retriable answer costs three exchanges, not seconds.
 * Properties: every failure says what failed; a registry that answers
 * only 5xx or 429 leaves the value to be retried, not dead-lettered; an
 * id read from an answer fits the Confluent header.
 */
#include "fuzz.h"

#include "config.h"
#include "error.h"
#include "registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST 65536
#define MAX_ANSWERS 8
#define SEPARATOR "\r\n~~next~~\r\n"

static int listen_fd = -1;
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *answers[MAX_ANSWERS];
static size_t answer_lens[MAX_ANSWERS];
static size_t answer_count;
static size_t exchanges; /* requests answered for this input */
static _Thread_local bool skip_sleep;

static struct mw_config cfg;
static struct registry *registry;
static struct codec *codec;
static struct mw_arena *arena;
static uint32_t next_id = 1;

/* The registry's back-off sleeps on the calling thread: skip it there. */
int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (skip_sleep)
        return 0;
    return (int)syscall(SYS_nanosleep, req, rem);
}

/* Reads one request (head, then Content-Length bytes of body). */
static void read_request(int fd)
{
    static char buf[MAX_REQUEST + 1];
    size_t len = 0;
    const char *end = NULL;

    while (len < MAX_REQUEST) {
        ssize_t n = read(fd, buf + len, MAX_REQUEST - len);

        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL)
            continue;
        {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t body =
                cl != NULL && cl < end
                    ? strtoul(cl + strlen("\r\nContent-Length:"), NULL, 10)
                    : 0;

            if (len >= (size_t)(end + 4 - buf) + body)
                return;
        }
    }
}

static void *serve(void *unused)
{
    struct timeval tv = {2, 0};

    (void)unused;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);

        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        read_request(fd);
        pthread_mutex_lock(&answer_lock);
        if (answer_count > 0) {
            size_t k = exchanges < answer_count ? exchanges : answer_count - 1;
            const uint8_t *answer = answers[k];
            size_t len = answer_lens[k];

            for (size_t done = 0; done < len;) {
                ssize_t n = send(fd, answer + done, len - done, MSG_NOSIGNAL);

                if (n <= 0)
                    break;
                done += (size_t)n;
            }
        }
        exchanges++;
        pthread_mutex_unlock(&answer_lock);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t addr_len = sizeof(addr);
    static char url[64];
    struct codec_registry attach = {.fetch = registry_fetch_schema,
                                    .requests_id = -1,
                                    .events_id = -1,
                                    .cache_size = 1};
    struct mw_error err;
    pthread_t thread;

    (void)argc;
    (void)argv;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0 ||
        bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(listen_fd, 16) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&addr, &addr_len) != 0)
        fuzz_fail("cannot listen on the loopback: %s", strerror(errno));
    if (pthread_create(&thread, NULL, serve, NULL) != 0)
        fuzz_fail("cannot start the answering thread");
    pthread_detach(thread);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(addr.sin_port));
    cfg.schema_registry_url = url;
    cfg.schema_registry_timeout_ms = 5000;
    cfg.schema_registry_cache_size = 1;
    cfg.schema_registry_auto_register = 1;
    mw_error_clear(&err);
    registry = registry_new(&cfg, &err);
    if (registry == NULL)
        fuzz_fail("registry_new: %s", err.msg);
    codec = fuzz_codec_new();
    arena = fuzz_arena_new();
    attach.ctx = registry;
    if (codec_use_registry(codec, &attach, &err) != 0)
        fuzz_fail("codec_use_registry: %s", err.msg);
    return 0;
}

/* The status code of a response, as libcurl would read it, or 0. */
static long status_of(const uint8_t *data, size_t size)
{
    long status = 0;

    /* The input is not NUL-terminated: read the three digits by hand. */
    if (size < 12 || memcmp(data, "HTTP/1.", 7) != 0 || data[8] != ' ')
        return 0;
    for (size_t i = 9; i < 12; i++) {
        if (data[i] < '0' || data[i] > '9')
            return 0;
        status = status * 10 + (data[i] - '0');
    }
    return status;
}

/* http: the status every request is answered with, or 0 when it varies. */
static void fetch(long http)
{
    unsigned char value[7] = {0, 0, 0, 0, 0, 0, 0};
    struct mw_record rec;
    struct mw_error err;
    enum codec_status status;
    uint32_t id = next_id++;

    value[1] = (unsigned char)(id >> 24);
    value[2] = (unsigned char)(id >> 16);
    value[3] = (unsigned char)(id >> 8);
    value[4] = (unsigned char)id;
    arena_reset(arena);
    mw_error_clear(&err);
    status = codec_decode(codec, value, sizeof(value), arena, &rec, &err);
    if (status != CODEC_OK && err.msg[0] == '\0')
        fuzz_fail("status %s without a message", codec_status_name(status));
    if (status == CODEC_OK)
        return;
    if ((http >= 500 && http <= 599) || http == 429) {
        if (status != CODEC_UNKNOWN_SCHEMA || !err.retriable)
            fuzz_fail("HTTP %ld dead-letters the value: %s: %s", http,
                      codec_status_name(status), err.msg);
    }
}

static void subject(bool is_register)
{
    struct mw_error err;
    int64_t id = -1;

    cfg.schema_registry_auto_register = is_register;
    mw_error_clear(&err);
    if (registry_subject_id(registry, "customer.requests", "\"string\"", &id,
                            &err) == 0) {
        if (id < 0 || id > INT32_MAX)
            fuzz_fail("schema id %lld does not fit a Confluent header",
                      (long long)id);
    } else if (err.msg[0] == '\0') {
        fuzz_fail("registry_subject_id failed without a message");
    }
}

/* Splits the answers of an input at each SEPARATOR. */
static void split_answers(const uint8_t *p, size_t len)
{
    const size_t sep_len = strlen(SEPARATOR);

    answer_count = 0;
    exchanges = 0;
    while (answer_count < MAX_ANSWERS - 1) {
        const uint8_t *sep = memmem(p, len, SEPARATOR, sep_len);

        if (sep == NULL)
            break;
        answers[answer_count] = p;
        answer_lens[answer_count++] = (size_t)(sep - p);
        len -= (size_t)(sep - p) + sep_len;
        p = sep + sep_len;
    }
    answers[answer_count] = p;
    answer_lens[answer_count++] = len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pthread_mutex_lock(&answer_lock);
    split_answers(data + 1, size - 1);
    pthread_mutex_unlock(&answer_lock);
    skip_sleep = true;
    if (data[0] & 1)
        subject((data[0] & 2) != 0);
    else
        fetch(answer_count == 1 ? status_of(answers[0], answer_lens[0]) : 0);
    skip_sleep = false;
    pthread_mutex_lock(&answer_lock);
    answer_count = 0;
    pthread_mutex_unlock(&answer_lock);
    return 0;
}

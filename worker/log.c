/*
 * Structured logs: one JSON object a line on stderr.  The line is built in
 * a stack buffer and written with one write(2), so lines from several
 * threads never interleave; a line longer than the buffer is cut and marked
 * with "truncated":true.  Never prints secrets: callers pass redacted
 * values (see config).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    min_level = level;
}

int log_enabled(enum log_level level)
{
    return (int)level >= min_level;
}

int log_parse_level(const char *s, enum log_level *level)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *level = LOG_WARN;
        return 0;
    }
    return -1;
}

struct line {
    char buf[4096];
    size_t len;
    int truncated;
};

static void put(struct line *l, const char *s, size_t n)
{
    /* Keep room for the closing text appended at the end. */
    size_t room = sizeof(l->buf) - 32 - l->len;

    if (l->len + 32 > sizeof(l->buf))
        room = 0;
    if (n > room) {
        n = room;
        l->truncated = 1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Appends s as a JSON string literal. */
static void put_json(struct line *l, const char *s)
{
    char esc[8];

    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            put(l, "\\\"", 2);
            break;
        case '\\':
            put(l, "\\\\", 2);
            break;
        case '\n':
            put(l, "\\n", 2);
            break;
        case '\r':
            put(l, "\\r", 2);
            break;
        case '\t':
            put(l, "\\t", 2);
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                put(l, esc, 6);
            } else {
                put(l, (const char *)p, 1);
            }
        }
    }
    put(l, "\"", 1);
}

void log_write(enum log_level level, const char *module, const char *msg,
               const struct log_field *fields)
{
    struct line l = {.len = 0};
    struct timeval tv;
    struct tm tm;
    char ts[96], num[32];
    ssize_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    put_str(&l, "{\"ts\":\"");
    put_str(&l, ts);
    put_str(&l, "\",\"level\":\"");
    put_str(&l, level_names[level]);
    put_str(&l, "\",\"module\":");
    put_json(&l, module);
    put_str(&l, ",\"msg\":");
    put_json(&l, msg);
    for (const struct log_field *f = fields; f && f->key; f++) {
        if (!f->is_num && f->str == NULL)
            continue;
        put_str(&l, ",");
        put_json(&l, f->key);
        put_str(&l, ":");
        if (f->is_num) {
            snprintf(num, sizeof(num), "%lld", (long long)f->num);
            put_str(&l, num);
        } else {
            put_json(&l, f->str);
        }
    }
    if (l.truncated) {
        memcpy(l.buf + l.len, ",\"truncated\":true", 17);
        l.len += 17;
    }
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    n = write(STDERR_FILENO, l.buf, l.len);
    (void)n;
}

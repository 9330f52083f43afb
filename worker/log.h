/*
 * Structured logs: one JSON object a line on stderr, with ts, level,
 * module, msg (constant text) and then the fields that apply.  Values go in
 * fields, never in msg.  Thread-safe; a line is written with one write(2).
 */
#ifndef MW_LOG_H
#define MW_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

struct log_field {
    const char *key;
    const char *str; /* NULL with is_num false: the field is omitted */
    int64_t num;
    int is_num;
};

#define LF_STR(k, v) ((struct log_field){.key = (k), .str = (v)})
#define LF_INT(k, v) ((struct log_field){.key = (k), .num = (v), .is_num = 1})

/* Sets the lowest level written (default LOG_INFO). */
void log_set_level(enum log_level level);

/* True when a message of this level would be written. */
int log_enabled(enum log_level level);

/* Parses "debug", "info", "warn" or "error"; 0, or -1 when unknown. */
int log_parse_level(const char *s, enum log_level *level);

/* Writes one line; fields ends with an entry whose key is NULL. */
void log_write(enum log_level level, const char *module, const char *msg,
               const struct log_field *fields);

#define MW_LOG(level, module, msg, ...)                                        \
    do {                                                                       \
        if (log_enabled(level))                                                \
            log_write(level, module, msg,                                      \
                      (const struct log_field[]){                              \
                          __VA_ARGS__ __VA_OPT__(, ){.key = 0}});              \
    } while (0)

#define log_debug(module, msg, ...) MW_LOG(LOG_DEBUG, module, msg, __VA_ARGS__)
#define log_info(module, msg, ...) MW_LOG(LOG_INFO, module, msg, __VA_ARGS__)
#define log_warn(module, msg, ...) MW_LOG(LOG_WARN, module, msg, __VA_ARGS__)
#define log_error(module, msg, ...) MW_LOG(LOG_ERROR, module, msg, __VA_ARGS__)

#endif

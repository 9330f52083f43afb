/*
 * Errors carried to the caller: formatting helpers for struct mw_error.
 * These functions can't fail; text that does not fit is truncated.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mw_error_set(struct mw_error *err, enum mw_error_code code, bool retriable,
                  const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->code = code;
    err->retriable = retriable;
    err->detail[0] = '\0';
    err->hint[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

void mw_error_detail(struct mw_error *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
}

void mw_error_hint(struct mw_error *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->hint, sizeof(err->hint), fmt, ap);
    va_end(ap);
}

void mw_error_no_memory(struct mw_error *err)
{
    mw_error_set(err, MW_ERR_SYSTEM, true, "out of memory");
}

void mw_error_clear(struct mw_error *err)
{
    memset(err, 0, sizeof(*err));
}

void mw_error_print(const struct mw_error *err, const char *prefix)
{
    fprintf(stderr, "%s: %s\n", prefix ? prefix : "error", err->msg);
    if (err->detail[0])
        fprintf(stderr, "detail: %s\n", err->detail);
    if (err->hint[0])
        fprintf(stderr, "hint: %s\n", err->hint);
}

/*
 * Helpers of the fuzz targets (see fuzz.h).  Linked into every target.
 */
#include "fuzz.h"

#include "error.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("fuzz: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

struct codec *fuzz_codec_new(void)
{
    struct mw_error err;
    struct codec *codec;

    mw_error_clear(&err);
    codec = codec_new(&err);
    if (codec == NULL)
        fuzz_fail("codec_new: %s", err.msg);
    /* Only failures are worth reading at a million lines a minute. */
    log_set_level(LOG_ERROR);
    return codec;
}

struct mw_arena *fuzz_arena_new(void)
{
    struct mw_arena *arena = arena_new();

    if (arena == NULL)
        fuzz_fail("arena_new: out of memory");
    return arena;
}

void fuzz_check_round_trip(struct codec *plain, struct mw_arena *arena,
                           const struct mw_record *rec)
{
    struct mw_record back;
    struct mw_error err;
    const void *first, *second;
    size_t first_len, second_len;
    enum codec_status status;

    mw_error_clear(&err);
    if (codec_encode(plain, rec, arena, &first, &first_len, &err) != 0)
        fuzz_fail("an accepted %s does not encode: %s",
                  mw_record_names[rec->type], err.msg);
    status = codec_decode(plain, first, first_len, arena, &back, &err);
    if (status != CODEC_OK)
        fuzz_fail("an encoded %s does not decode: %s: %s",
                  mw_record_names[rec->type], codec_status_name(status),
                  err.msg);
    if (back.type != rec->type)
        fuzz_fail("a %s decodes as a %s", mw_record_names[rec->type],
                  mw_record_names[back.type]);
    if (codec_encode(plain, &back, arena, &second, &second_len, &err) != 0)
        fuzz_fail("a decoded %s does not encode again: %s",
                  mw_record_names[rec->type], err.msg);
    if (first_len != second_len || memcmp(first, second, first_len) != 0)
        fuzz_fail("a %s changes in a round trip (%zu bytes, then %zu)",
                  mw_record_names[rec->type], first_len, second_len);
}

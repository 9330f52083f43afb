/*
 * Fuzz target: a consumed value in single-object framing (or any other
 * first byte), decoded by a codec without a Schema Registry, as the
 * consumer does.  Every value either decodes, and then survives a round
 * trip, or fails with a status and a message for dlq.error.
 */
#include "fuzz.h"

#include "error.h"

static struct codec *codec;
static struct mw_arena *arena;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    codec = fuzz_codec_new();
    arena = fuzz_arena_new();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_record rec;
    struct mw_error err;
    enum codec_status status;

    arena_reset(arena);
    mw_error_clear(&err);
    status = codec_decode(codec, data, size, arena, &rec, &err);
    if (status == CODEC_OK)
        fuzz_check_round_trip(codec, arena, &rec);
    else if (status >= CODEC_STATUS_COUNT || err.msg[0] == '\0')
        fuzz_fail("status %d (%s) without a message for dlq.error", (int)status,
                  codec_status_name(status));
    return 0;
}

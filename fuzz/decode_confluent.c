/*
 * Fuzz target: a consumed value in Confluent framing, decoded by a codec
 * with a Schema Registry attached through a fake fetch function, so that
 * both the value and the writer schema the registry hands over are
 * outside bytes.  The first byte of an input chooses what the rest is:
 *
 *   0  the whole framed value; ids 1 to STOCK_COUNT are the writer
 *      schemas compiled in (the requests union, CustomerRequested alone,
 *      the events union), UNREACHABLE_ID fails as a registry that is away,
 *      any other id below FIRST_FRESH_ID is unknown to the registry
 *   1  a stock writer schema (next byte, modulo STOCK_COUNT), then the
 *      Avro body; the target writes the header
 *   2  a writer schema's JSON text, a NUL byte, then the Avro body; the
 *      text is served under an id never asked for before, so it is
 *      parsed and resolved every time (the seeds hold evolved schemas:
 *      a field added, one dropped, a type changed)
 *
 * Every value either decodes, and then survives a round trip, or fails
 * with a status and a message for dlq.error; a registry away must come
 * back retriable.
 */
#include "fuzz.h"

#include "error.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define STOCK_COUNT 3
#define UNREACHABLE_ID 99
#define FIRST_FRESH_ID 1000
#define MAX_VALUE (1024 * 1024)

static struct codec *codec; /* with the fake registry */
static struct codec *plain; /* without: the round trip */
static struct mw_arena *arena;
static char *stock[STOCK_COUNT + 1]; /* by id; [0] unused */
static const char *fresh_json;       /* served for fresh_id */
static uint32_t fresh_id = FIRST_FRESH_ID;
static unsigned char value[MAX_VALUE];

static int fake_fetch(void *ctx, uint32_t id, char **json, struct mw_error *err)
{
    (void)ctx;
    *json = NULL;
    if (id == UNREACHABLE_ID) {
        mw_error_set(err, MW_ERR_REGISTRY, true,
                     "could not fetch schema id %u: the Schema Registry is "
                     "not reachable",
                     id);
        return -1;
    }
    if (id >= 1 && id <= STOCK_COUNT)
        *json = strdup(stock[id]);
    else if (id == fresh_id && fresh_json != NULL)
        *json = strdup(fresh_json);
    else {
        mw_error_set(err, MW_ERR_REGISTRY, false, "no schema id %u", id);
        return CODEC_FETCH_NOT_FOUND;
    }
    if (*json == NULL)
        fuzz_fail("out of memory");
    return 0;
}

static char *copy(const char *text)
{
    char *out = text != NULL ? strdup(text) : NULL;

    if (out == NULL)
        fuzz_fail("a compiled-in schema is missing");
    return out;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct mw_error err;
    struct codec_registry registry = {
        .fetch = fake_fetch, .requests_id = 1, .events_id = 3, .cache_size = 4};

    (void)argc;
    (void)argv;
    stock[1] = copy(codec_schema_json("customer.requests"));
    stock[2] = copy(codec_schema_json("CustomerRequested"));
    stock[3] = copy(codec_schema_json("customer.events"));
    codec = fuzz_codec_new();
    plain = fuzz_codec_new();
    arena = fuzz_arena_new();
    mw_error_clear(&err);
    if (codec_use_registry(codec, &registry, &err) != 0)
        fuzz_fail("codec_use_registry: %s", err.msg);
    return 0;
}

/* Writes 0x00 and id big-endian before body into value; its length. */
static size_t frame(uint32_t id, const uint8_t *body, size_t len)
{
    if (len > MAX_VALUE - 5)
        len = MAX_VALUE - 5;
    value[0] = 0;
    value[1] = (unsigned char)(id >> 24);
    value[2] = (unsigned char)(id >> 16);
    value[3] = (unsigned char)(id >> 8);
    value[4] = (unsigned char)id;
    memcpy(value + 5, body, len);
    return len + 5;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_record rec;
    struct mw_error err;
    enum codec_status status;
    const uint8_t *nul;
    char *schema = NULL;
    const void *framed = value;
    size_t len;
    uint32_t id = 0;

    if (size < 1)
        return 0;
    switch (data[0]) {
    case 0:
        framed = data + 1;
        len = size - 1;
        if (codec_confluent_id(framed, len, &id) != 0)
            id = 0;
        if (id >= FIRST_FRESH_ID)
            return 0; /* may be cached from an earlier input */
        break;
    case 1:
        if (size < 2)
            return 0;
        len = frame(1 + data[1] % STOCK_COUNT, data + 2, size - 2);
        break;
    case 2:
        nul = memchr(data + 1, '\0', size - 1);
        if (nul == NULL)
            return 0;
        schema = strndup((const char *)data + 1, (size_t)(nul - data - 1));
        if (schema == NULL)
            fuzz_fail("out of memory");
        fresh_json = schema;
        fresh_id++;
        len = frame(fresh_id, nul + 1, size - (size_t)(nul + 1 - data));
        break;
    default:
        return 0;
    }
    arena_reset(arena);
    mw_error_clear(&err);
    status = codec_decode(codec, framed, len, arena, &rec, &err);
    fresh_json = NULL;
    free(schema);
    if (status == CODEC_OK) {
        fuzz_check_round_trip(plain, arena, &rec);
        return 0;
    }
    if (status >= CODEC_STATUS_COUNT || err.msg[0] == '\0')
        fuzz_fail("status %d (%s) without a message for dlq.error", (int)status,
                  codec_status_name(status));
    if (id == UNREACHABLE_ID && !err.retriable)
        fuzz_fail("a registry away dead-letters the value: %s", err.msg);
    return 0;
}

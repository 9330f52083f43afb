/*
 * Fuzz target: the text `mesh-worker produce` reads (a file or stdin),
 * split into JSON values as the CLI does (objects, arrays of them, one
 * after another), each turned into a request by
 * convert_record_from_json().  A request accepted there must encode, as
 * produce then does, and survive two round trips: through Avro (what the
 * worker consumes) and through JSON (what `tail` prints).
 */
#include "fuzz.h"

#include "convert.h"
#include "error.h"

#include <jansson.h>
#include <string.h>

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

/* The record printed as JSON must read back as the same record. */
static void check_json_round_trip(const struct mw_record *rec)
{
    json_t *printed = convert_record_to_json(rec);
    struct mw_record back;
    struct mw_error err;
    const void *first, *second;
    size_t first_len, second_len;

    if (printed == NULL)
        fuzz_fail("convert_record_to_json: out of memory");
    mw_error_clear(&err);
    if (convert_record_from_json(printed, arena, &back, &err) != 0) {
        char *text = json_dumps(printed, JSON_COMPACT);

        fuzz_fail("a printed %s does not read back: %s: %s",
                  mw_record_names[rec->type], err.msg, text ? text : "?");
    }
    json_decref(printed);
    if (codec_encode(codec, rec, arena, &first, &first_len, &err) != 0 ||
        codec_encode(codec, &back, arena, &second, &second_len, &err) != 0)
        fuzz_fail("a %s read back from JSON does not encode: %s",
                  mw_record_names[rec->type], err.msg);
    if (first_len != second_len || memcmp(first, second, first_len) != 0)
        fuzz_fail("a %s changes when printed and read back",
                  mw_record_names[rec->type]);
}

static void produce_object(const json_t *obj)
{
    struct mw_record rec;
    struct mw_error err;

    arena_reset(arena);
    mw_error_clear(&err);
    if (convert_record_from_json(obj, arena, &rec, &err) != 0) {
        if (err.msg[0] == '\0')
            fuzz_fail("a refused object without a message");
        return;
    }
    if (rec.type != MW_REC_CUSTOMER_REQUESTED &&
        rec.type != MW_REC_CUSTOMER_TERMINATION_REQUESTED &&
        rec.type != MW_REC_CUSTOMER_UPDATE_REQUESTED)
        fuzz_fail("produce would publish a %s", mw_record_names[rec.type]);
    fuzz_check_round_trip(codec, arena, &rec);
    check_json_round_trip(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t pos = 0;

    /* The loop of produce_text() in cli.c. */
    while (pos < size) {
        json_error_t jerr;
        json_t *value;
        size_t i;
        json_t *item;

        /* As there, a NUL byte counts as white space (strchr finds it). */
        while (pos < size && strchr(" \t\r\n", text[pos]) != NULL)
            pos++;
        if (pos == size)
            break;
        value =
            json_loadb(text + pos, size - pos,
                       JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
        if (value == NULL)
            return 0;
        if (jerr.position <= 0)
            fuzz_fail("a JSON value of %d bytes", jerr.position);
        pos += (size_t)jerr.position;
        if (json_is_array(value)) {
            json_array_foreach(value, i, item) {
                produce_object(item);
            }
        } else {
            produce_object(value);
        }
        json_decref(value);
    }
    return 0;
}

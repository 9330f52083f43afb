/*
 * What the fuzz targets share: libFuzzer's entry points, a failure that
 * stops the run with a message (a harness may abort; the worker never
 * does), and the round-trip property every decoded record must hold.
 */
#ifndef MW_FUZZ_H
#define MW_FUZZ_H

#include "arena.h"
#include "codec.h"
#include "mw.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints "fuzz: <message>" to stderr and aborts, which libFuzzer reports
 * as a crash with the input that caused it. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

/* Returns a new codec without a registry, or fails the run. */
struct codec *fuzz_codec_new(void);

/* Returns a new arena, or fails the run. */
struct mw_arena *fuzz_arena_new(void);

/*
 * Checks that rec, as a decoder or the JSON reader made it, encodes with
 * plain (a codec without a registry), decodes back to a record of the
 * same type, and encodes again to the same bytes: nothing accepted on the
 * way in is lost or changed on the way out.  Fails the run otherwise.
 */
void fuzz_check_round_trip(struct codec *plain, struct mw_arena *arena,
                           const struct mw_record *rec);

#endif

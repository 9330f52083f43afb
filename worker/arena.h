/*
 * Bump allocator for one batch.
 *
 * Everything decoded or built while a batch is handled comes from one arena
 * and is freed at once by arena_reset(), so the hot path makes no per-message
 * malloc/free pairs once the arena has grown to the batch's size.
 */
#ifndef MW_ARENA_H
#define MW_ARENA_H

#include "error.h"

#include <stddef.h>

struct mw_arena;

/* Returns a new empty arena, or NULL when out of memory. */
struct mw_arena *arena_new(void) MW_MUSTCHECK;

/* Frees the arena and everything allocated from it; NULL does nothing. */
void arena_destroy(struct mw_arena *arena);

/* Forgets every allocation but keeps the memory for reuse. */
void arena_reset(struct mw_arena *arena);

/* Returns len bytes aligned for any type, or NULL when out of memory. */
void *arena_alloc(struct mw_arena *arena, size_t len);

/* Returns a NUL-terminated copy of len bytes of s, or NULL. */
char *arena_strndup(struct mw_arena *arena, const char *s, size_t len);

/* Returns a NUL-terminated copy of s, or NULL. */
char *arena_strdup(struct mw_arena *arena, const char *s);

/* Returns a formatted string, or NULL. */
char *arena_printf(struct mw_arena *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Bytes currently held from the system (for metrics and tests). */
size_t arena_capacity(const struct mw_arena *arena);

#endif

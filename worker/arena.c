/*
 * Bump allocator for one batch: a list of chunks, the newest first.  Reset
 * keeps the largest chunk only, so a steady workload settles on one chunk
 * and allocation becomes a pointer bump.  Not thread-safe: one arena per
 * thread.
 */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_MIN_CHUNK (64 * 1024)
#define ARENA_ALIGN 16

struct chunk {
    struct chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

struct mw_arena {
    struct chunk *head;
    size_t total; /* bytes used by all chunks since the last reset */
};

struct mw_arena *arena_new(void)
{
    return calloc(1, sizeof(struct mw_arena));
}

void arena_destroy(struct mw_arena *arena)
{
    struct chunk *c, *next;

    if (arena == NULL)
        return;
    for (c = arena->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(arena);
}

void arena_reset(struct mw_arena *arena)
{
    struct chunk *c, *next;
    size_t want = arena->total;

    if (arena->head == NULL)
        return;
    /* Keep one chunk big enough for the whole last batch. */
    if (arena->head->next != NULL || arena->head->size < want) {
        for (c = arena->head; c != NULL; c = next) {
            next = c->next;
            free(c);
        }
        arena->head = NULL;
        if (want < ARENA_MIN_CHUNK)
            want = ARENA_MIN_CHUNK;
        c = malloc(sizeof(*c) + want);
        if (c != NULL) {
            c->next = NULL;
            c->size = want;
            c->used = 0;
            arena->head = c;
        }
    } else {
        arena->head->used = 0;
    }
    arena->total = 0;
}

void *arena_alloc(struct mw_arena *arena, size_t len)
{
    struct chunk *c = arena->head;
    size_t need = (len + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    void *p;

    if (need < len)
        return NULL;
    if (c == NULL || c->size - c->used < need) {
        size_t size = need > ARENA_MIN_CHUNK ? need : ARENA_MIN_CHUNK;

        if (c != NULL && c->size * 2 > size)
            size = c->size * 2;
        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            return NULL;
        c->next = arena->head;
        c->size = size;
        c->used = 0;
        arena->head = c;
    }
    p = c->data + c->used;
    c->used += need;
    arena->total += need;
    return p;
}

char *arena_strndup(struct mw_arena *arena, const char *s, size_t len)
{
    char *p = arena_alloc(arena, len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(struct mw_arena *arena, const char *s)
{
    return arena_strndup(arena, s, strlen(s));
}

char *arena_printf(struct mw_arena *arena, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *p;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    p = arena_alloc(arena, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t arena_capacity(const struct mw_arena *arena)
{
    size_t n = 0;

    for (const struct chunk *c = arena->head; c != NULL; c = c->next)
        n += c->size;
    return n;
}

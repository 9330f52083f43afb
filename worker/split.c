/*
 * The split of a batch over two database sessions (split.h): union-find
 * over the items, joined by every request id and claimed domain they
 * share, then whole groups dealt to the emptier half.
 */
#include "split.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* A string key (request id or domain) and the first item that had it. */
struct slot {
    const char *key;
    size_t item;
};

struct split {
    size_t *parent; /* union-find over items */
    size_t *size;   /* items in the group of a root */
    struct slot *slots;
    size_t mask; /* slots - 1, a power of two minus one */
};

static size_t find(struct split *s, size_t i)
{
    while (s->parent[i] != i) {
        s->parent[i] = s->parent[s->parent[i]];
        i = s->parent[i];
    }
    return i;
}

static void join(struct split *s, size_t a, size_t b)
{
    a = find(s, a);
    b = find(s, b);
    if (a == b)
        return;
    if (s->size[a] < s->size[b]) {
        size_t t = a;

        a = b;
        b = t;
    }
    s->parent[b] = a;
    s->size[a] += s->size[b];
}

/* Joins item with the first earlier item that had key. */
static void add_key(struct split *s, const char *key, size_t item)
{
    size_t at;

    if (key == NULL)
        return;
    for (at = (size_t)mw_hash_text(key) & s->mask; s->slots[at].key != NULL;
         at = (at + 1) & s->mask) {
        if (strcmp(s->slots[at].key, key) == 0) {
            join(s, s->slots[at].item, item);
            return;
        }
    }
    s->slots[at].key = key;
    s->slots[at].item = item;
}

/* Counts the keys of a creation item: its id and the domains it claims. */
static size_t key_count(const struct store_item *item)
{
    const struct mw_request *r = item->request;

    return 1 + (item->is_valid ? 1 + r->additional_domains_count : 0);
}

static void add_keys(struct split *s, const struct store_item *item, size_t i)
{
    const struct mw_request *r = item->request;

    add_key(s, r->request_id, i);
    if (!item->is_valid)
        return; /* an invalid request claims no domain */
    add_key(s, r->primary_domain, i);
    for (size_t d = 0; d < r->additional_domains_count; d++)
        add_key(s, r->additional_domains[d], i);
}

/*
 * Counts the creations and their keys; false when an item is neither a
 * creation nor undecodable, or a creation lacks its request.
 */
static bool only_creations(const struct store_item *items,
                           const struct mw_record *records, size_t count,
                           size_t *creations, size_t *keys)
{
    *creations = *keys = 0;
    for (size_t i = 0; i < count; i++) {
        if (items[i].kind == STORE_ITEM_DLQ)
            continue;
        if (items[i].kind != STORE_ITEM_REQUEST ||
            records[i].type != MW_REC_CUSTOMER_REQUESTED ||
            items[i].request == NULL)
            return false;
        (*creations)++;
        *keys += key_count(&items[i]);
    }
    return true;
}

static bool split_new(struct split *s, size_t count, size_t keys,
                      struct mw_arena *arena)
{
    size_t slots = 16;

    while (slots < 2 * keys)
        slots *= 2;
    s->parent = arena_alloc(arena, count * sizeof(*s->parent));
    s->size = arena_alloc(arena, count * sizeof(*s->size));
    s->slots = arena_alloc(arena, slots * sizeof(*s->slots));
    if (s->parent == NULL || s->size == NULL || s->slots == NULL)
        return false;
    memset(s->slots, 0, slots * sizeof(*s->slots));
    s->mask = slots - 1;
    for (size_t i = 0; i < count; i++) {
        s->parent[i] = i;
        s->size[i] = 1;
    }
    return true;
}

int split_batch(const struct store_item *items, const struct mw_record *records,
                size_t count, size_t min_creations, struct mw_arena *arena,
                unsigned char *half)
{
    struct split s;
    size_t creations, keys, filled[2] = {0, 0};
    unsigned char *dealt;

    if (!only_creations(items, records, count, &creations, &keys) ||
        creations < min_creations || creations < 2 ||
        !split_new(&s, count, keys, arena))
        return 1;
    dealt = arena_alloc(arena, count);
    if (dealt == NULL)
        return 1;
    memset(dealt, 0xff, count);
    for (size_t i = 0; i < count; i++) {
        if (items[i].kind == STORE_ITEM_REQUEST)
            add_keys(&s, &items[i], i);
    }
    /* Each group, when first met, goes to the half with fewer items. */
    for (size_t i = 0; i < count; i++) {
        size_t root;

        if (items[i].kind != STORE_ITEM_REQUEST)
            continue;
        root = find(&s, i);
        if (dealt[root] == 0xff) {
            dealt[root] = filled[1] < filled[0];
            filled[dealt[root]] += s.size[root];
        }
    }
    if (filled[0] * 4 < creations || filled[1] * 4 < creations)
        return 1;
    for (size_t i = 0; i < count; i++)
        half[i] = items[i].kind == STORE_ITEM_REQUEST ? dealt[find(&s, i)] : 0;
    return 2;
}

/*
 * The split of a batch over two database sessions: requests that share a
 * request id or a domain stay in one half, the halves are balanced, and
 * any item that is not a creation request (a termination, an update, a
 * kind not known yet) keeps the batch whole.
 */
#include "split.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define MAX_ITEMS 256

/* A batch under construction: items, their records and their strings. */
struct batch {
    struct store_item items[MAX_ITEMS];
    struct mw_record records[MAX_ITEMS];
    struct mw_request requests[MAX_ITEMS];
    char ids[MAX_ITEMS][40], primaries[MAX_ITEMS][40];
    const char *extra_lists[MAX_ITEMS][1];
    unsigned char half[MAX_ITEMS];
    size_t count;
};

/* Adds a valid creation with its own id and domain; returns its index. */
static size_t add_creation(struct batch *b)
{
    size_t i = b->count++;
    struct mw_request *r = &b->requests[i];

    snprintf(b->ids[i], sizeof(b->ids[i]), "request-%zu", i);
    snprintf(b->primaries[i], sizeof(b->primaries[i]), "d%zu.example", i);
    memset(r, 0, sizeof(*r));
    r->request_id = b->ids[i];
    r->primary_domain = b->primaries[i];
    b->records[i].type = MW_REC_CUSTOMER_REQUESTED;
    b->items[i].kind = STORE_ITEM_REQUEST;
    b->items[i].request = r;
    b->items[i].is_valid = true;
    return i;
}

/* Empties b, then adds n distinct valid creations. */
static void fill(struct batch *b, int n)
{
    b->count = 0;
    for (int i = 0; i < n; i++)
        add_creation(b);
}

/* Gives item i the additional domain domain, which must outlive b. */
static void add_domain(struct batch *b, size_t i, const char *domain)
{
    b->extra_lists[i][0] = domain;
    b->requests[i].additional_domains = b->extra_lists[i];
    b->requests[i].additional_domains_count = 1;
}

static int split(struct batch *b)
{
    struct mw_arena *arena = arena_new();
    int halves;

    assert_non_null(arena);
    memset(b->half, 0xee, sizeof(b->half));
    halves = split_batch(b->items, b->records, b->count, SPLIT_MIN_CREATIONS,
                         arena, b->half);
    arena_destroy(arena);
    return halves;
}

static void count_halves(const struct batch *b, size_t *n0, size_t *n1)
{
    *n0 = *n1 = 0;
    for (size_t i = 0; i < b->count; i++) {
        assert_true(b->half[i] == 0 || b->half[i] == 1);
        if (b->half[i] == 0)
            (*n0)++;
        else
            (*n1)++;
    }
}

static void distinct_creations_split_evenly(void **state)
{
    static struct batch b;
    size_t n0, n1;

    (void)state;
    fill(&b, 100);
    assert_int_equal(split(&b), 2);
    count_halves(&b, &n0, &n1);
    assert_int_equal(n0, 50);
    assert_int_equal(n1, 50);
}

static void a_shared_domain_keeps_requests_together(void **state)
{
    static struct batch b;
    size_t a, c, d, e;

    (void)state;
    fill(&b, 80);
    a = 3;
    c = 60;
    /* a's additional domain is c's primary: one group. */
    add_domain(&b, a, b.primaries[c]);
    /* d and e share an additional domain; e and 70 share a request id. */
    d = 10;
    e = 41;
    add_domain(&b, d, "shared.example");
    add_domain(&b, e, "shared.example");
    b.requests[70].request_id = b.ids[e];
    assert_int_equal(split(&b), 2);
    assert_int_equal(b.half[a], b.half[c]);
    assert_int_equal(b.half[d], b.half[e]);
    assert_int_equal(b.half[e], b.half[70]);
}

static void an_invalid_request_claims_no_domain(void **state)
{
    static struct batch b;
    size_t n0, n1;

    (void)state;
    b.count = 0;
    for (int i = 0; i < 64; i++) {
        size_t k = add_creation(&b);

        /* Every request names the same domain, but only the first is
         * valid: the others claim nothing and are free to go anywhere. */
        snprintf(b.primaries[k], sizeof(b.primaries[k]), "same.example");
        b.items[k].is_valid = k == 0;
    }
    assert_int_equal(split(&b), 2);
    count_halves(&b, &n0, &n1);
    assert_int_equal(n0, 32);
    assert_int_equal(n1, 32);
}

static void one_domain_for_all_keeps_the_batch_whole(void **state)
{
    static struct batch b;

    (void)state;
    b.count = 0;
    for (int i = 0; i < 100; i++) {
        size_t k = add_creation(&b);

        add_domain(&b, k, "everyone.example");
    }
    assert_int_equal(split(&b), 1);
}

static void few_creations_stay_on_one_session(void **state)
{
    static struct batch b;

    (void)state;
    b.count = 0;
    for (int i = 0; i < SPLIT_MIN_CREATIONS - 1; i++)
        add_creation(&b);
    assert_int_equal(split(&b), 1);
    add_creation(&b);
    assert_int_equal(split(&b), 2);
}

static void undecodable_messages_go_to_the_first_half(void **state)
{
    static struct batch b;

    (void)state;
    fill(&b, 70);
    b.items[5].kind = STORE_ITEM_DLQ;
    b.items[5].request = NULL;
    b.records[5].type = MW_REC_COUNT; /* nothing decoded */
    assert_int_equal(split(&b), 2);
    assert_int_equal(b.half[5], 0);
}

static void a_termination_keeps_the_batch_whole(void **state)
{
    static struct batch b;

    (void)state;
    fill(&b, 100);
    b.items[50].kind = STORE_ITEM_TERMINATION;
    assert_int_equal(split(&b), 1);
    /* A termination rejected by the rules is claimed like a request, but
     * its record says what it is. */
    b.items[50].kind = STORE_ITEM_REQUEST;
    b.records[50].type = MW_REC_CUSTOMER_TERMINATION_REQUESTED;
    assert_int_equal(split(&b), 1);
}

static void an_update_keeps_the_batch_whole(void **state)
{
    static struct batch b;

    (void)state;
    fill(&b, 100);
    b.items[7].kind = STORE_ITEM_UPDATE;
    b.records[7].type = MW_REC_CUSTOMER_UPDATE_REQUESTED;
    assert_int_equal(split(&b), 1);
    /* An update the rules rejected is claimed like a request. */
    b.items[7].kind = STORE_ITEM_REQUEST;
    assert_int_equal(split(&b), 1);
}

static void an_unknown_item_kind_keeps_the_batch_whole(void **state)
{
    static struct batch b;

    (void)state;
    fill(&b, 100);
    b.items[99].kind = (enum store_item_kind)(STORE_ITEM_UPDATE + 1);
    assert_int_equal(split(&b), 1);
    b.items[99].kind = STORE_ITEM_REQUEST;
    b.records[99].type = (enum mw_record_type)(MW_REC_COUNT - 1);
    assert_int_equal(split(&b), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(distinct_creations_split_evenly),
        cmocka_unit_test(a_shared_domain_keeps_requests_together),
        cmocka_unit_test(an_invalid_request_claims_no_domain),
        cmocka_unit_test(one_domain_for_all_keeps_the_batch_whole),
        cmocka_unit_test(few_creations_stay_on_one_session),
        cmocka_unit_test(undecodable_messages_go_to_the_first_half),
        cmocka_unit_test(a_termination_keeps_the_batch_whole),
        cmocka_unit_test(an_update_keeps_the_batch_whole),
        cmocka_unit_test(an_unknown_item_kind_keeps_the_batch_whole),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

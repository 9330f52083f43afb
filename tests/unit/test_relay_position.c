/*
 * The exactly-once relay's recorded position: which outbox ids it covers
 * after rounds with gaps, how it is written and read back, and what it
 * forgets.
 */
#include "relay_position.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void check_covered(const struct relay_position *pos, int64_t last,
                          const char *want)
{
    for (int64_t id = 1; id <= last; id++) {
        bool is_covered = want[id - 1] == 'x';

        if (relay_position_covers(pos, id) != is_covered)
            fail_msg("id %lld: expected %s, seen %s", (long long)id,
                     is_covered ? "covered" : "not covered",
                     is_covered ? "not covered" : "covered");
    }
}

static void ids_passed_unseen_stay_uncovered_until_published(void **state)
{
    struct relay_position pos;
    const int64_t first[] = {1, 2, 5, 6, 9};
    const int64_t late[] = {3, 7};
    const int64_t rest[] = {4, 8, 10};

    (void)state;
    relay_position_init(&pos);
    check_covered(&pos, 3, "...");
    assert_int_equal(relay_position_advance(&pos, first, 5, 100), 0);
    check_covered(&pos, 10, "xx..xx..x.");
    assert_int_equal(relay_position_advance(&pos, late, 2, 101), 0);
    check_covered(&pos, 10, "xxx.xxx.x.");
    assert_int_equal(relay_position_advance(&pos, rest, 3, 102), 0);
    check_covered(&pos, 10, "xxxxxxxxxx");
    assert_int_equal(pos.count, 0);
    assert_int_equal(pos.next, 11);
    relay_position_free(&pos);
}

static void a_hole_filled_in_its_middle_splits(void **state)
{
    struct relay_position pos;
    const int64_t ends[] = {1, 9};
    const int64_t middle[] = {5};

    (void)state;
    relay_position_init(&pos);
    assert_int_equal(relay_position_advance(&pos, ends, 2, 100), 0);
    assert_int_equal(relay_position_advance(&pos, middle, 1, 100), 0);
    check_covered(&pos, 9, "x...x...x");
    assert_int_equal(pos.count, 2);
    relay_position_free(&pos);
}

static void the_text_reads_back_as_the_same_position(void **state)
{
    struct relay_position pos, back;
    const int64_t ids[] = {2, 4, 5, 10};
    char text[RELAY_POSITION_TEXT_MAX + 1];
    struct mw_error err;

    (void)state;
    relay_position_init(&pos);
    relay_position_init(&back);
    assert_int_equal(relay_position_advance(&pos, ids, 4, 1000), 0);
    assert_int_equal(relay_position_format(&pos, 1000, text, sizeof(text)), 0);
    assert_string_equal(text, "mw1;1-1@1000;3-3@1000;6-9@1000");
    assert_int_equal(relay_position_parse(&back, pos.next, text, &err), 0);
    check_covered(&back, 11, ".x.xx....x.");
    relay_position_free(&pos);
    relay_position_free(&back);
}

static void nothing_recorded_covers_nothing(void **state)
{
    struct relay_position pos;
    struct mw_error err;

    (void)state;
    relay_position_init(&pos);
    assert_int_equal(relay_position_parse(&pos, -1001, "", &err), 0);
    assert_false(relay_position_covers(&pos, 1));
    relay_position_free(&pos);
}

static void text_of_another_writer_is_refused(void **state)
{
    static const char *const texts[] = {
        "hello", "mw1;5-3@1", "mw1;1-2@1;2-3@1", "mw1;1-20@1", "mw1;x",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct relay_position pos;
        struct mw_error err;

        relay_position_init(&pos);
        if (relay_position_parse(&pos, 10, texts[i], &err) == 0)
            fail_msg("\"%s\" was accepted", texts[i]);
        assert_non_null(strstr(err.msg, "recorded position"));
        relay_position_free(&pos);
    }
}

static void old_holes_and_too_many_are_forgotten(void **state)
{
    struct relay_position pos;
    char text[RELAY_POSITION_TEXT_MAX + 1];
    int64_t id;

    (void)state;
    relay_position_init(&pos);
    id = 2;
    assert_int_equal(relay_position_advance(&pos, &id, 1, 0), 0);
    /* Every other id for a long while: far more holes than fit. */
    for (int64_t i = 0; i < 1000; i++) {
        id = 4 + 2 * i;
        assert_int_equal(
            relay_position_advance(&pos, &id, 1, RELAY_POSITION_HOLE_KEEP_S),
            0);
    }
    assert_true(relay_position_format(&pos, RELAY_POSITION_HOLE_KEEP_S + 1,
                                      text, sizeof(text)) > 1);
    assert_true(strlen(text) <= RELAY_POSITION_TEXT_MAX);
    /* The hole of id 1 was older than the keep: gone first. */
    assert_true(relay_position_covers(&pos, 1));
    /* The newest holes are kept. */
    assert_false(relay_position_covers(&pos, 2001));
    relay_position_free(&pos);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_passed_unseen_stay_uncovered_until_published),
        cmocka_unit_test(a_hole_filled_in_its_middle_splits),
        cmocka_unit_test(the_text_reads_back_as_the_same_position),
        cmocka_unit_test(nothing_recorded_covers_nothing),
        cmocka_unit_test(text_of_another_writer_is_refused),
        cmocka_unit_test(old_holes_and_too_many_are_forgotten),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of the writer-schema checks made before avro-c parses a
 * schema: a named type defined twice is refused under avro-c's rules for
 * full names (a dotted name, the namespace attribute, an empty namespace,
 * the enclosing record's namespace), and everything else is let through.
 */
#include "codec.h"
#include "error.h"
#include "schema_check.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#define ENUM(name)                                                             \
    "{\"type\": \"enum\", \"name\": \"" name "\", "                            \
    "\"symbols\": [\"A\"]}"

static void names_defined_twice_are_refused_by_full_name(void **state)
{
    static const struct {
        const char *schema;
        const char *name;
    } cases[] = {
        {"[\"null\", " ENUM("E") ", " ENUM("E") "]", "E"},
        {"{\"type\": \"record\", \"name\": \"R\", \"namespace\": \"n\", "
         "\"fields\": [{\"name\": \"a\", \"type\": " ENUM(
             "E") "}, "
                  "{\"name\": \"b\", \"type\": " ENUM("n.E") "}]}",
         "n.E"},
        {"[{\"type\": \"record\", \"name\": \"a.R\", \"fields\": "
         "[{\"name\": \"x\", \"type\": {\"type\": \"array\", \"items\": "
         "{\"type\": \"map\", \"values\": " ENUM("E") "}}}]}, " ENUM("a.E") "]",
         "a.E"},
        {"{\"type\": \"record\", \"name\": \"R\", \"namespace\": \"n\", "
         "\"fields\": [{\"name\": \"a\", \"type\": {\"type\": \"fixed\", "
         "\"name\": \"F\", \"namespace\": \"\", \"size\": 1}}, "
         "{\"name\": \"b\", \"type\": {\"type\": \"fixed\", \"name\": \"F\", "
         "\"size\": 2, \"namespace\": \"\"}}]}",
         "F"},
        {"[{\"type\": \"record\", \"name\": \"R\", \"fields\": []}, "
         "{\"type\": \"record\", \"name\": \"R\", \"fields\": []}]",
         "R"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_error err;
        char want[64];

        mw_error_clear(&err);
        if (schema_check_names(cases[i].schema, &err) != -1)
            fail_msg("case %zu was let through", i);
        snprintf(want, sizeof(want), "defines the type %s twice",
                 cases[i].name);
        if (strstr(err.msg, want) == NULL)
            fail_msg("case %zu: expected \"%s\" in \"%s\"", i, want, err.msg);
        assert_int_equal(err.code, MW_ERR_DECODE);
        assert_false(err.retriable);
    }
}

static void distinct_names_and_other_text_pass(void **state)
{
    static const char *const cases[] = {
        /* the same short name in two namespaces */
        "{\"type\": \"record\", \"name\": \"R\", \"namespace\": \"n\", "
        "\"fields\": [{\"name\": \"a\", \"type\": " ENUM(
            "E") "}, "
                 "{\"name\": \"b\", \"type\": {\"type\": \"enum\", \"name\": "
                 "\"E\", "
                 "\"namespace\": \"m\", \"symbols\": [\"B\"]}}]}",
        /* a reference by name is no definition */
        "{\"type\": \"record\", \"name\": \"R\", \"fields\": [{\"name\": "
        "\"a\", \"type\": " ENUM("E") "}, {\"name\": \"b\", \"type\": "
                                      "\"E\"}]}",
        /* left to avro-c, which refuses them cleanly */
        "not JSON",
        "{\"type\": 7}",
        "[{\"type\": \"enum\"}, {\"type\": \"enum\"}]",
        "\"string\"",
        "",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_error err;

        mw_error_clear(&err);
        if (schema_check_names(cases[i], &err) != 0)
            fail_msg("case %zu was refused: %s", i, err.msg);
    }
}

static void the_compiled_in_schemas_pass(void **state)
{
    static const char *const names[] = {"customer.requests", "customer.events"};

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct mw_error err;

        mw_error_clear(&err);
        if (schema_check_names(codec_schema_json(names[i]), &err) != 0)
            fail_msg("%s was refused: %s", names[i], err.msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_defined_twice_are_refused_by_full_name),
        cmocka_unit_test(distinct_names_and_other_text_pass),
        cmocka_unit_test(the_compiled_in_schemas_pass),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * `mesh-worker customers show ID|DOMAIN`: prints what the database holds
 * about one customer as JSON, its change history included, for an operator
 * answering "what happened to this request".  It only reads; it never migrates
 * or waits for the database.
 */
#include "cli_internal.h"

#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_customers(int argc, char **argv)
{
    struct mw_config cfg;
    struct embedded_pg *pg = NULL;
    struct store *store = NULL;
    struct mw_error err;
    const char *conninfo;
    char *json = NULL;
    int rc, found;

    if (cli_wants_help(argc, argv) || argc != 3 ||
        strcmp(argv[1], "show") != 0) {
        FILE *out = cli_wants_help(argc, argv) ? stdout : stderr;

        fprintf(out,
                "Usage: mesh-worker customers show CUSTOMER_ID|DOMAIN\n\n"
                "Prints a customer's state as JSON: the customer row, its "
                "domains, its\ntermination, its pending lifecycle timers and "
                "its change history (every\nupdate applied, oldest first; "
                "times in UTC). A domain finds its live\nholder, else the "
                "customer that held it last.\n\nExit status: 0 found, 1 not "
                "found or database failure, 2 bad usage.\n");
        return out == stdout ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    mw_error_clear(&err);
    conninfo = cli_database(&cfg, &pg, &err);
    if (conninfo == NULL)
        goto fail;
    store = store_new(conninfo, &err);
    if (store == NULL)
        goto fail;
    found = store_customer_describe(store, argv[2], &json, &err);
    if (found < 0)
        goto fail;
    if (found == 0) {
        fprintf(stderr, "mesh-worker: no customer with id or domain \"%s\"\n",
                argv[2]);
        rc = CLI_EXIT_FAILURE;
    } else {
        printf("%s\n", json);
        rc = CLI_EXIT_OK;
    }
    goto done;
fail:
    rc = cli_fail(&err);
done:
    free(json);
    store_destroy(store);
    embedded_pg_stop(pg);
    config_free(&cfg);
    return rc;
}

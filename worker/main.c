/*
 * mesh-worker: provisions MSP customers from Kafka requests, exactly once.
 * Dispatches to the subcommands (cli.h); only main exits.
 */
#include "cli.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * glibc gives each thread that allocates its own malloc arena, up to
 * eight a core, and keeps what an arena freed for that arena: librdkafka's
 * threads, the relay and the scheduler each holding a peak of their own
 * summed to more than 64 MB of RSS.  Two arenas are enough for threads
 * that mostly wait; MALLOC_ARENA_MAX, when the operator set it, wins.
 */
static void limit_malloc_arenas(void)
{
    const char *set = getenv("MALLOC_ARENA_MAX");

    if (set == NULL || set[0] == '\0')
        mallopt(M_ARENA_MAX, 2);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    limit_malloc_arenas();
    if (cmd == NULL || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        cli_usage();
        return cmd == NULL ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("mesh-worker %s\n", MW_VERSION);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        return cli_run(argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return cli_migrate(argc - 1, argv + 1);
    if (strcmp(cmd, "produce") == 0)
        return cli_produce(argc - 1, argv + 1);
    if (strcmp(cmd, "tail") == 0)
        return cli_tail(argc - 1, argv + 1);
    if (strcmp(cmd, "dlq") == 0)
        return cli_dlq(argc - 1, argv + 1);
    if (strcmp(cmd, "customers") == 0)
        return cli_customers(argc - 1, argv + 1);
    fprintf(stderr, "mesh-worker: unknown command \"%s\"\n", cmd);
    fprintf(stderr, "hint: Run \"mesh-worker --help\" for the commands.\n");
    return CLI_EXIT_USAGE;
}

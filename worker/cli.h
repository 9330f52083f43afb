/*
 * The subcommands of mesh-worker.  Each takes the arguments after its own
 * name and returns the process exit status (see cli_usage and README).
 */
#ifndef MW_CLI_H
#define MW_CLI_H

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1, /* a runtime error: could not connect, ... */
    CLI_EXIT_USAGE = 2,   /* bad arguments or configuration */
    CLI_EXIT_INPUT = 3,   /* produce: an input that is not a request */
};

int cli_run(int argc, char **argv);
int cli_migrate(int argc, char **argv);
int cli_produce(int argc, char **argv);
int cli_tail(int argc, char **argv);
int cli_customers(int argc, char **argv);
int cli_dlq(int argc, char **argv);

/* Prints the top-level help to stdout. */
void cli_usage(void);

#endif

/*
 * The subcommands of mesh-worker.  Each takes the arguments after its own
 * name (argv[0] is the command's name) and returns the process exit
 * status (see cli_usage and README); none of them exits.  The service is
 * in cli_service.c, each operator tool in a cli_<command>.c of its own.
 */
#ifndef MW_CLI_H
#define MW_CLI_H

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1, /* a runtime error: could not connect, ... */
    CLI_EXIT_USAGE = 2,   /* bad arguments or configuration */
    CLI_EXIT_INPUT = 3,   /* produce: an input that is not a request */
};

/* The service: the worker, until SIGTERM or SIGINT; the migrations. */
int cli_run(int argc, char **argv);
int cli_migrate(int argc, char **argv);

/* The operator tools. */
int cli_produce(int argc, char **argv);
int cli_tail(int argc, char **argv);
int cli_customers(int argc, char **argv);
int cli_dlq(int argc, char **argv);

/* Prints the top-level help to stdout. */
void cli_usage(void);

#endif

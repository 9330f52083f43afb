/*
 * The consumer group on customer.requests: poll, cut batches, hand them to
 * process, commit offsets only after a batch's transaction committed, and
 * pause (never skip) while the database is away.
 */
#ifndef MW_CONSUMER_H
#define MW_CONSUMER_H

#include "config.h"
#include "error.h"
#include "process.h"

#include <signal.h>

struct consumer;

/*
 * Joins cfg->group_id at bootstrap (cooperative-sticky assignment, new
 * groups from the earliest offset).  process is borrowed.  Returns NULL
 * with err on a configuration librdkafka refuses.
 */
struct consumer *consumer_new(const struct mw_config *cfg,
                              const char *bootstrap, struct process *process,
                              struct mw_error *err) MW_MUSTCHECK;

/*
 * Consumes until *stop becomes non-zero, then finishes the batch in hand,
 * commits offsets and leaves the group.  Returns 0, or -1 with err
 * (MW_ERR_CONFIG) when Kafka refuses the credentials before the consumer
 * ever joined its group: a wrong password stops start-up.
 */
int consumer_run(struct consumer *consumer, volatile sig_atomic_t *stop,
                 struct mw_error *err) MW_MUSTCHECK;

/* Closes the consumer (leaving the group if still in it); NULL is fine. */
void consumer_destroy(struct consumer *consumer);

#endif

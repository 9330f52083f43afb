/*
 * Deterministic identifiers.  event_id is UUIDv5(namespace,
 * "<event type>:<source id>") (SPEC §8), so a re-published event is
 * recognisably the same; a customer id is UUIDv5(namespace,
 * "customer:<request id>"), so a request retried after a rollback gets the
 * same customer id.  These functions can't fail.
 */
#ifndef MW_IDS_H
#define MW_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define IDS_UUID_LEN 36
#define IDS_NAMESPACE "5b0c3f1e-8d4a-4e7b-9c2f-6a1d7e4b8f30"

/* Writes UUIDv5(namespace, name[0..len)) in lower-case text. */
void ids_uuid_v5(const char *name, size_t len, char out[IDS_UUID_LEN + 1]);

/* Writes the event id of event_type ("CustomerCreated") for source_id. */
void ids_event_id(const char *event_type, const char *source_id,
                  char out[IDS_UUID_LEN + 1]);

/* Writes the customer id provisioned for request_id. */
void ids_customer_id(const char *request_id, char out[IDS_UUID_LEN + 1]);

/* True when s is a UUID in its 36-character text form. */
bool ids_is_uuid(const char *s);

#endif

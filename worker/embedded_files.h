/*
 * Schemas and migrations compiled into the binary (see cmake/embed.cmake).
 * The table ends with an entry whose kind is NULL.
 */
#ifndef MW_EMBEDDED_FILES_H
#define MW_EMBEDDED_FILES_H

struct mw_embedded_file {
    const char *kind; /* "schema" or "migration" */
    const char *name; /* file name, e.g. "CustomerCreated.avsc" */
    const char *text; /* NUL-terminated contents */
};

extern const struct mw_embedded_file mw_embedded_files[];

#endif

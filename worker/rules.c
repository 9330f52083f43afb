/*
 * The form's rules (SPEC §2 and §8): decides whether a decoded request may
 * be provisioned, and if so returns it normalised.  It does no I/O, reads
 * no clock and keeps no state, so the same request always gets the same
 * answer on every replica; checks that need the database (a domain already
 * taken, a customer that does not exist) belong to store, but the
 * sentences that tell an MSP their outcome are written here too, so that
 * every message a CustomerRejected carries comes from this file.  The
 * invariant: every failing rule is reported at once, in schema field
 * order, with the top-level field name, and every message is valid UTF-8
 * whatever bytes the request held.  Domains go through libidn2
 * (IDNA2008, UTS #46 mapping) without IDN2_USE_STD3_ASCII_RULES, because
 * libidn2 2.3 then silently drops characters such as "_" and " " instead
 * of refusing them; the host-name rules are checked here on the A-label
 * form instead.
 */
#include "rules.h"
#include "ids.h"
#include "rules_internal.h"

#include <arpa/inet.h>
#include <assert.h>
#include <idn2.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A normalised domain with its trailing dot, and the NUL. */
#define DOMAIN_BUF (MW_MAX_DOMAIN + 2)
#define MAX_LOCAL_PART 64
#define MAX_LABEL 63

/* Cuts a character that vsnprintf split at the end of s[0..len). */
static void trim_partial_utf8(char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t lead = len, want;

    while (lead > 0 && (u[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead == 0 || (u[lead - 1] & 0xc0) != 0xc0)
        return;
    lead--;
    want = u[lead] >= 0xf0 ? 4 : u[lead] >= 0xe0 ? 3 : 2;
    if (len - lead < want)
        s[lead] = '\0';
}

void rules_add_error(struct mw_rejection *rej, const char *field, int code,
                     const char *fmt, ...)
{
    struct mw_rejection_error *e;
    va_list ap;
    int n;

    if (rej->count >= MW_MAX_REJECTION_ERRORS)
        return;
    e = &rej->errors[rej->count++];
    e->field = field;
    e->code = code;
    va_start(ap, fmt);
    n = vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    if (n < 0)
        e->message[0] = '\0';
    else if ((size_t)n >= sizeof(e->message))
        trim_partial_utf8(e->message, sizeof(e->message) - 1);
}

/*
 * Decodes the UTF-8 sequence at s[*i] into *cp and advances *i.  Returns
 * false on a malformed, overlong or surrogate sequence, leaving *i on the
 * offending byte.
 */
static bool utf8_next(const unsigned char *s, size_t *i, uint32_t *cp)
{
    unsigned char c = s[*i];
    uint32_t min;
    int more;

    if (c < 0x80) {
        *cp = c;
        (*i)++;
        return true;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        *cp = c & 0x1f;
        more = 1;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        *cp = c & 0x0f;
        more = 2;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        *cp = c & 0x07;
        more = 3;
        min = 0x10000;
    } else {
        return false;
    }
    for (int k = 1; k <= more; k++) {
        if ((s[*i + k] & 0xc0) != 0x80)
            return false;
        *cp = (*cp << 6) | (s[*i + k] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return false;
    *i += (size_t)more + 1;
    return true;
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/*
 * Invisible characters that change how the text around them is shown or
 * hide what it says: bidirectional embeddings, overrides and isolates
 * (U+202A-U+202E, U+2066-U+2069, "Evil\u202eCorp" displays reversed),
 * line and paragraph separators, zero-width space and no-break space
 * (BOM), invisible operators, interlinear annotations, tag characters,
 * and noncharacters.  The zero-width joiner and non-joiner (U+200C,
 * U+200D) and the directional marks (U+200E, U+200F, U+061C) stay
 * allowed: Persian and Indic names and emoji need them, and a mark
 * cannot reorder the text after it.
 */
static bool is_format(uint32_t cp)
{
    return cp == 0x00ad || cp == 0x180e || cp == 0x200b ||
           (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2064) ||
           (cp >= 0x2066 && cp <= 0x206f) || cp == 0xfeff ||
           (cp >= 0xfff9 && cp <= 0xfffb) || (cp >= 0xe0000 && cp <= 0xe007f) ||
           (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
}

/*
 * Writes value into buf (SHOWN_BUF bytes) fit to quote in a message:
 * quotes, backslashes, control characters and bytes that are not UTF-8
 * escaped, and cut after SHOWN_MAX bytes with "...".  Returns buf.
 */
const char *rules_show(char buf[SHOWN_BUF], const char *value)
{
    const unsigned char *s = (const unsigned char *)value;
    size_t i = 0, len = 0;

    while (s[i] != '\0') {
        char piece[16];
        size_t start = i, n;
        uint32_t cp;

        if (!utf8_next(s, &i, &cp)) {
            snprintf(piece, sizeof(piece), "\\x%02X", s[i]);
            i++;
        } else if (cp == '"' || cp == '\\') {
            snprintf(piece, sizeof(piece), "\\%c", (char)cp);
        } else if (is_control(cp)) {
            snprintf(piece, sizeof(piece), "\\x%02X", (unsigned)cp);
        } else if (is_format(cp)) {
            snprintf(piece, sizeof(piece), "\\u%04X", (unsigned)cp);
        } else {
            memcpy(piece, s + start, i - start);
            piece[i - start] = '\0';
        }
        n = strlen(piece);
        if (len + n > SHOWN_MAX) {
            memcpy(buf + len, "...", 4);
            return buf;
        }
        memcpy(buf + len, piece, n);
        len += n;
    }
    buf[len] = '\0';
    return buf;
}

enum text_verdict { TEXT_OK, TEXT_NOT_UTF8, TEXT_CONTROL, TEXT_FORMAT };

/*
 * Checks s is UTF-8 without control or invisible formatting characters
 * (the first one found goes to *control) and counts code points.
 */
static enum text_verdict check_text(const char *s, size_t *count,
                                    uint32_t *control)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    *count = 0;
    while (u[i] != '\0') {
        uint32_t cp;

        if (!utf8_next(u, &i, &cp))
            return TEXT_NOT_UTF8;
        if (is_control(cp) || is_format(cp)) {
            *control = cp;
            return is_control(cp) ? TEXT_CONTROL : TEXT_FORMAT;
        }
        (*count)++;
    }
    return TEXT_OK;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ldh(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           c == '-';
}

static char to_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Says what is wrong with an ASCII character of a name, or NULL. */
static const char *bad_name_char(unsigned char c)
{
    if (c == ' ')
        return "it contains a space";
    if (c < 0x20 || c == 0x7f)
        return "it contains a control character";
    if (c == '_')
        return "it contains an underscore";
    if (c == '@')
        return "it contains an @";
    if (c < 0x80 && !is_ldh((char)c) && c != '.')
        return "it contains a character other than letters, digits, "
               "hyphens and dots";
    return NULL;
}

/* Host-name rules on a lower-case ASCII name without its trailing dot. */
static const char *check_host_name(const char *name)
{
    size_t len = strlen(name), labels = 0, start = 0;

    if (len == 0)
        return "it is empty";
    for (size_t i = 0; i < len; i++) {
        const char *why = bad_name_char((unsigned char)name[i]);

        if (why != NULL)
            return why;
        if ((unsigned char)name[i] >= 0x80)
            return "it contains a character that is not allowed in domain "
                   "names";
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '.')
            continue;
        if (i == start)
            return "it has an empty label (two dots in a row or a leading "
                   "dot)";
        if (i - start > MAX_LABEL)
            return "a label is longer than 63 characters";
        if (name[start] == '-' || name[i - 1] == '-')
            return "a label begins or ends with a hyphen";
        labels++;
        start = i + 1;
    }
    if (len > MW_MAX_DOMAIN)
        return "it is longer than 253 characters";
    if (labels < 2)
        return "it is a single label; a domain needs at least two, such as "
               "example.com";
    for (size_t i = len; i > 0 && name[i - 1] != '.'; i--) {
        if (!is_digit(name[i - 1]))
            return NULL;
    }
    return "its top-level label is all digits";
}

/* Says in words why libidn2 refused a name. */
static const char *idn2_why(int rc)
{
    switch (rc) {
    case IDN2_TOO_BIG_LABEL:
    case IDN2_PUNYCODE_BIG_OUTPUT:
        return "a label is longer than 63 characters";
    case IDN2_TOO_BIG_DOMAIN:
        return "it is longer than 253 characters";
    case IDN2_HYPHEN_STARTEND:
        return "a label begins or ends with a hyphen";
    case IDN2_2HYPHEN:
        return "a label has hyphens in both the third and fourth position";
    case IDN2_DISALLOWED:
        return "it contains a character that is not allowed in domain names";
    case IDN2_UNASSIGNED:
        return "it contains a character that Unicode has not assigned";
    case IDN2_LEADING_COMBINING:
        return "a label begins with a combining mark";
    case IDN2_CONTEXTJ:
    case IDN2_CONTEXTJ_NO_RULE:
    case IDN2_CONTEXTO:
    case IDN2_CONTEXTO_NO_RULE:
        return "it contains a joiner or another character that is not "
               "allowed where it stands";
    case IDN2_BIDI:
        return "it mixes right-to-left and left-to-right text in a way "
               "that is not allowed";
    case IDN2_PUNYCODE_BAD_INPUT:
    case IDN2_PUNYCODE_OVERFLOW:
    case IDN2_INVALID_ALABEL:
    case IDN2_UALABEL_MISMATCH:
    case IDN2_ALABEL_ROUNDTRIP_FAILED:
        return "a label that begins with xn-- is not a valid A-label";
    default:
        return "it is not a valid internationalised domain name";
    }
}

/* True when some label of the lower-case name begins with xn--. */
static bool has_alabel(const char *name)
{
    for (const char *p = name; p != NULL; p = strchr(p, '.')) {
        if (*p == '.')
            p++;
        if (strncmp(p, "xn--", 4) == 0)
            return true;
    }
    return false;
}

/*
 * Writes the normalised form of name into buf: lower case, A-labels, no
 * trailing dot.  Returns VALID, INVALID with *why set to a static fragment,
 * or NO_MEMORY when libidn2 could not allocate.  Needs no arena, so that
 * checks without one (terminations) use the same rules.
 */
static enum verdict domain_to_ascii(const char *name, char buf[DOMAIN_BUF],
                                    const char **why)
{
    const unsigned char *u = (const unsigned char *)name;
    bool is_ascii = true;
    size_t i = 0, count = 0, len;

    while (u[i] != '\0') {
        uint32_t cp;
        const char *bad = bad_name_char(u[i]);

        if (bad != NULL) {
            *why = bad;
            return INVALID;
        }
        if (!utf8_next(u, &i, &cp)) {
            *why = "it is not valid UTF-8";
            return INVALID;
        }
        if (cp >= 0x80)
            is_ascii = false;
        count++;
    }
    if (count == 0) {
        *why = "it is empty";
        return INVALID;
    }
    /* 253 and a trailing dot; libidn2 never sees longer input. */
    if (count > MW_MAX_DOMAIN + 1) {
        *why = "it is longer than 253 characters";
        return INVALID;
    }
    if (is_ascii) {
        for (i = 0; u[i] != '\0'; i++)
            buf[i] = to_lower((char)u[i]);
        buf[i] = '\0';
    }
    if (!is_ascii || has_alabel(buf)) {
        char *ascii = NULL;
        int rc = idn2_to_ascii_8z(is_ascii ? buf : name, &ascii,
                                  IDN2_NONTRANSITIONAL);

        if (rc == IDN2_MALLOC)
            return NO_MEMORY;
        if (rc != IDN2_OK) {
            idn2_free(ascii);
            *why = idn2_why(rc);
            return INVALID;
        }
        len = strlen(ascii);
        if (len >= DOMAIN_BUF) {
            idn2_free(ascii);
            *why = "it is longer than 253 characters";
            return INVALID;
        }
        for (i = 0; i <= len; i++)
            buf[i] = to_lower(ascii[i]);
        idn2_free(ascii);
    }
    len = strlen(buf);
    if (len > 1 && buf[len - 1] == '.')
        buf[len - 1] = '\0';
    *why = check_host_name(buf);
    return *why == NULL ? VALID : INVALID;
}

const char *rules_normalize_domain(const char *name, struct mw_arena *arena,
                                   const char **why)
{
    char buf[DOMAIN_BUF];
    const char *reason = NULL;
    const char *copy = NULL;

    switch (domain_to_ascii(name, buf, &reason)) {
    case VALID:
        copy = arena_strdup(arena, buf);
        if (copy == NULL)
            reason = "there was not enough memory to check it";
        break;
    case INVALID:
        break;
    case NO_MEMORY:
        reason = "there was not enough memory to check it";
        break;
    }
    if (why != NULL)
        *why = copy == NULL ? reason : NULL;
    return copy;
}

bool rules_domain_is_under(const char *domain, const char *parent)
{
    size_t len = strlen(domain), parent_len = strlen(parent);
    const char *tail;

    if (len < parent_len || parent_len == 0)
        return false;
    tail = domain + len - parent_len;
    for (size_t i = 0; i < parent_len; i++) {
        if (to_lower(tail[i]) != to_lower(parent[i]))
            return false;
    }
    return len == parent_len || tail[-1] == '.';
}

/*
 * Checks an e-mail address: one @, a local part of 1-64 characters without
 * spaces, control characters or unquoted specials, a domain that passes
 * the domain rules, 254 characters in all.  Writes the reason into why.
 */
static enum verdict check_email(const char *value, char *why, size_t size)
{
    const char *at = strchr(value, '@');
    size_t count, local_count = 0;
    uint32_t control;
    char buf[DOMAIN_BUF];
    const char *domain_why;
    enum verdict v;

    switch (check_text(value, &count, &control)) {
    case TEXT_NOT_UTF8:
        snprintf(why, size, "is not valid: it is not valid UTF-8");
        return INVALID;
    case TEXT_CONTROL:
        snprintf(why, size, "is not valid: it contains a control character");
        return INVALID;
    case TEXT_FORMAT:
        snprintf(why, size,
                 "is not valid: it contains an invisible formatting "
                 "character");
        return INVALID;
    case TEXT_OK:
        break;
    }
    if (count > MW_MAX_EMAIL) {
        snprintf(why, size, "is not valid: it is longer than %d characters",
                 MW_MAX_EMAIL);
        return INVALID;
    }
    if (at == NULL) {
        snprintf(why, size, "is not valid: it has no @");
        return INVALID;
    }
    if (strchr(at + 1, '@') != NULL) {
        snprintf(why, size, "is not valid: it has more than one @");
        return INVALID;
    }
    if (at == value) {
        snprintf(why, size, "is not valid: the part before the @ is empty");
        return INVALID;
    }
    for (const char *p = value; p < at; p++) {
        if (*p == ' ') {
            snprintf(why, size,
                     "is not valid: the part before the @ contains a space");
            return INVALID;
        }
        if (strchr("\"(),:;<>[\\]", *p) != NULL) {
            snprintf(why, size,
                     "is not valid: the part before the @ contains the "
                     "character %c, which is not allowed there",
                     *p);
            return INVALID;
        }
        if (*p == '.' && (p == value || p + 1 == at || p[1] == '.')) {
            snprintf(why, size,
                     "is not valid: the part before the @ begins or ends "
                     "with a dot or has two dots in a row");
            return INVALID;
        }
        if (((unsigned char)*p & 0xc0) != 0x80)
            local_count++;
    }
    if (local_count > MAX_LOCAL_PART) {
        snprintf(why, size,
                 "is not valid: the part before the @ is longer than %d "
                 "characters",
                 MAX_LOCAL_PART);
        return INVALID;
    }
    v = domain_to_ascii(at + 1, buf, &domain_why);
    if (v == INVALID)
        snprintf(why, size, "has an invalid domain after the @: %s",
                 domain_why);
    return v;
}

/* Reports a required field that is NULL or empty; returns true if so. */
bool rules_is_missing(struct check *c, const char *field, const char *label,
                      const char *value)
{
    if (value != NULL && value[0] != '\0')
        return false;
    rules_add_error(c->rej, field, MW_REJ_REQUIRED_FIELD_MISSING,
                    "The %s is required but was not given.", label);
    return true;
}

/* A text of 1 to max printable code points (value not NULL). */
void rules_check_text_field(struct check *c, const char *field,
                            const char *label, const char *value, size_t max)
{
    char shown[SHOWN_BUF];
    size_t count;
    uint32_t control = 0;

    switch (check_text(value, &count, &control)) {
    case TEXT_NOT_UTF8:
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" is not valid UTF-8 text.", label,
                        rules_show(shown, value));
        return;
    case TEXT_CONTROL:
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" contains a control character "
                        "(U+%04X); only printable characters are allowed.",
                        label, rules_show(shown, value), (unsigned)control);
        return;
    case TEXT_FORMAT:
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" contains an invisible formatting "
                        "character (U+%04X) that changes how the text is "
                        "shown; only printable characters are allowed.",
                        label, rules_show(shown, value), (unsigned)control);
        return;
    case TEXT_OK:
        break;
    }
    if (count == 0)
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s is empty; give 1 to %zu characters or leave "
                        "it out.",
                        label, max);
    else if (count > max)
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" has %zu characters; it must have "
                        "1 to %zu.",
                        label, rules_show(shown, value), count, max);
}

void rules_check_uuid_field(struct check *c, const char *field,
                            const char *label, const char *value)
{
    char shown[SHOWN_BUF];

    if (rules_is_missing(c, field, label, value) || ids_is_uuid(value))
        return;
    rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                    "The %s \"%s\" is not a UUID such as "
                    "123e4567-e89b-12d3-a456-426614174000.",
                    label, rules_show(shown, value));
}

static void check_email_field(struct check *c, const char *field,
                              const char *label, const char *value)
{
    char shown[SHOWN_BUF];
    char why[128];

    if (rules_is_missing(c, field, label, value))
        return;
    switch (check_email(value, why, sizeof(why))) {
    case VALID:
        break;
    case INVALID:
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" %s.", label, rules_show(shown, value),
                        why);
        break;
    case NO_MEMORY:
        c->is_out_of_memory = true;
        break;
    }
}

/*
 * Normalises one domain into the arena.  Returns the copy, or NULL with
 * *why set when invalid (or when memory ran out, which is flagged).
 */
const char *rules_normalize(struct check *c, const char *value,
                            const char **why)
{
    char buf[DOMAIN_BUF];
    const char *copy;

    *why = NULL;
    switch (domain_to_ascii(value, buf, why)) {
    case VALID:
        copy = arena_strdup(c->arena, buf);
        if (copy == NULL)
            c->is_out_of_memory = true;
        return copy;
    case INVALID:
        return NULL;
    case NO_MEMORY:
        c->is_out_of_memory = true;
        return NULL;
    }
    return NULL;
}

/* A required domain field; returns its normalised form or NULL. */
static const char *check_domain_field(struct check *c, const char *field,
                                      const char *label, const char *value)
{
    char shown[SHOWN_BUF];
    const char *why, *domain;

    if (rules_is_missing(c, field, label, value))
        return NULL;
    domain = rules_normalize(c, value, &why);
    if (domain == NULL && why != NULL)
        rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                        "The %s \"%s\" is not a valid domain name: %s.", label,
                        rules_show(shown, value), why);
    return domain;
}

static void check_nfr_domain(struct check *c, const char *field,
                             const char *label, const char *value,
                             const char *domain, const char *msp_domain)
{
    char shown[SHOWN_BUF], shown_msp[SHOWN_BUF];

    if (rules_domain_is_under(domain, msp_domain))
        return;
    rules_add_error(c->rej, field, MW_REJ_NFR_DOMAIN_NOT_MSP_DOMAIN,
                    "The %s \"%s\" is neither the MSP domain \"%s\" nor "
                    "below it; an NFR account is only for the MSP's own "
                    "domains.",
                    label, rules_show(shown, value),
                    rules_show(shown_msp, msp_domain));
}

/* Reports how many of the additional domains broke one rule. */
static void add_count_error(struct check *c, int code, const char *first,
                            size_t count)
{
    char more[80] = "";

    if (count == 0)
        return;
    if (count > 1)
        snprintf(more, sizeof(more),
                 " In all, %zu additional domains break this rule.", count);
    rules_add_error(c->rej, "additional_domains", code, "%s%s", first, more);
}

/*
 * The additional domains: each a valid domain, no name twice (the primary
 * domain included), at most MW_MAX_ADDITIONAL_DOMAINS, and under the MSP
 * domain for NFR.  One error per rule broken, naming the first offender
 * and counting the rest.  Duplicates are found pairwise, O(N^2) in at most
 * 100 names.  Returns the normalised array, or NULL when any is invalid.
 */
static const char **check_additional(struct check *c,
                                     const struct mw_request *req,
                                     const char *primary,
                                     const char *nfr_parent)
{
    const char *label = "additional domain";
    size_t n = req->additional_domains_count;
    size_t invalid = 0, repeated = 0, foreign = 0;
    char invalid_msg[512], repeated_msg[512], foreign_msg[512];
    char shown[SHOWN_BUF], shown_other[SHOWN_BUF];
    const char **domains;

    if (n == 0)
        return NULL;
    /* The codec always gives an array when the count is not zero. */
    assert(req->additional_domains != NULL);
    if (n > MW_MAX_ADDITIONAL_DOMAINS) {
        rules_add_error(c->rej, "additional_domains", MW_REJ_INVALID_FIELD,
                        "The request has %zu additional domains; at most "
                        "%d are allowed.",
                        n, MW_MAX_ADDITIONAL_DOMAINS);
        return NULL;
    }
    domains = arena_alloc(c->arena, n * sizeof(*domains));
    if (domains == NULL) {
        c->is_out_of_memory = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *value = req->additional_domains[i];
        const char *why = "it is empty";
        const char *same = NULL;

        domains[i] = value == NULL ? NULL : rules_normalize(c, value, &why);
        if (domains[i] == NULL) {
            if (why != NULL && invalid++ == 0)
                snprintf(invalid_msg, sizeof(invalid_msg),
                         "The %s \"%s\" is not a valid domain name: %s.", label,
                         rules_show(shown, value ? value : ""), why);
            continue;
        }
        if (primary != NULL && strcmp(domains[i], primary) == 0)
            same = "the primary domain";
        for (size_t j = 0; same == NULL && j < i; j++) {
            if (domains[j] != NULL && strcmp(domains[i], domains[j]) == 0)
                same = "an earlier additional domain";
        }
        if (same != NULL && repeated++ == 0)
            snprintf(repeated_msg, sizeof(repeated_msg),
                     "The %s \"%s\" repeats %s (%s); a domain may appear "
                     "only once in a request.",
                     label, rules_show(shown, value), same,
                     rules_show(shown_other, domains[i]));
        if (nfr_parent != NULL &&
            !rules_domain_is_under(domains[i], nfr_parent) && foreign++ == 0)
            snprintf(foreign_msg, sizeof(foreign_msg),
                     "The %s \"%s\" is neither the MSP domain \"%s\" nor "
                     "below it; an NFR account is only for the MSP's own "
                     "domains.",
                     label, rules_show(shown, value),
                     rules_show(shown_other, nfr_parent));
    }
    add_count_error(c, MW_REJ_INVALID_FIELD, invalid_msg, invalid);
    add_count_error(c, MW_REJ_INVALID_FIELD, repeated_msg, repeated);
    add_count_error(c, MW_REJ_NFR_DOMAIN_NOT_MSP_DOMAIN, foreign_msg, foreign);
    return invalid + repeated + foreign == 0 ? domains : NULL;
}

/*
 * Reads a port of 1-65535 in decimal.  Returns the fragment saying what is
 * wrong, or NULL.
 */
static const char *parse_port(const char *s, unsigned *port)
{
    size_t len = strlen(s);

    if (len == 0)
        return "there is a colon but no port number after it";
    *port = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return "the port after the colon is not a number";
        if (i < 5)
            *port = *port * 10 + (unsigned)(s[i] - '0');
    }
    if (len > 5 || *port < 1 || *port > 65535)
        return "the port must be between 1 and 65535";
    return NULL;
}

/* Reads a dotted quad; returns the fragment saying what is wrong, or NULL. */
static const char *parse_ipv4(const char *s, unsigned char addr[4])
{
    int parts = 0;

    for (const char *p = s;; p++) {
        unsigned value = 0;
        const char *start = p;

        while (is_digit(*p) && p - start < 4)
            value = value * 10 + (unsigned)(*p++ - '0');
        if (p == start || parts == 4)
            return "it does not have four numbers separated by dots";
        if (p - start > 1 && *start == '0')
            return "a number has a leading zero";
        if (value > 255)
            return "a number is greater than 255";
        addr[parts++] = (unsigned char)value;
        if (*p == '\0')
            break;
        if (*p != '.')
            return "it does not have four numbers separated by dots";
    }
    if (parts != 4)
        return "it does not have four numbers separated by dots";
    /* 0/8 "this network", 127/8 loopback, 224/3 multicast and reserved. */
    if (addr[0] == 0 || addr[0] == 127 || addr[0] >= 224)
        return "it is an unspecified, loopback, multicast or reserved "
               "address, which cannot receive mail";
    return NULL;
}

static bool is_digits_and_dots(const char *s)
{
    for (; *s != '\0'; s++) {
        if (!is_digit(*s) && *s != '.')
            return false;
    }
    return true;
}

/* A delivery destination taken apart, its host normalised. */
struct destination {
    char host[DOMAIN_BUF + 2]; /* normalised, IPv6 with brackets */
    bool has_port;
    unsigned port;
};

/*
 * Parses a delivery destination: host name, IPv4 or [IPv6], optional
 * :port.  Returns NULL and fills d, or the fragment saying what is wrong
 * with *what naming the part ("host name", "IPv4 address", "IPv6
 * address"), or NULL for the whole.  *is_out_of_memory is set when
 * libidn2 could not allocate.
 */
static const char *parse_destination(const char *value, struct destination *d,
                                     const char **what, bool *is_out_of_memory)
{
    const char *port = NULL;
    const char *why;
    size_t count;
    uint32_t control;

    *what = NULL;
    switch (check_text(value, &count, &control)) {
    case TEXT_NOT_UTF8:
        return "it is not valid UTF-8";
    case TEXT_CONTROL:
        return "it contains a control character";
    case TEXT_FORMAT:
        return "it contains an invisible formatting character";
    case TEXT_OK:
        break;
    }
    if (count > MW_MAX_DESTINATION)
        return "it is longer than 260 characters";
    if (strstr(value, "://") != NULL)
        return "it is a URL; give only the host name, such as "
               "mail.example.com";
    d->has_port = false;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        unsigned char addr[16];
        char inner[INET6_ADDRSTRLEN];
        size_t len;

        *what = "IPv6 address";
        if (close == NULL)
            return "the closing bracket is missing";
        len = (size_t)(close - value - 1);
        if (len == 0 || len >= sizeof(inner))
            return "there is no IPv6 address between the brackets";
        for (size_t i = 0; i < len; i++)
            inner[i] = to_lower(value[1 + i]);
        inner[len] = '\0';
        if (inet_pton(AF_INET6, inner, addr) != 1)
            return "the text between the brackets is not an IPv6 address";
        if (addr[0] == 0xff || memcmp(addr, in6addr_any.s6_addr, 16) == 0 ||
            memcmp(addr, in6addr_loopback.s6_addr, 16) == 0)
            return "it is an unspecified, loopback or multicast address, "
                   "which cannot receive mail";
        if (close[1] != '\0' && close[1] != ':') {
            *what = NULL;
            return "there is text after the closing bracket";
        }
        snprintf(d->host, sizeof(d->host), "[%s]", inner);
        if (close[1] == ':')
            port = close + 2;
    } else {
        const char *colon = strchr(value, ':');
        char host[MW_MAX_DESTINATION * 4 + 1];
        size_t len = colon ? (size_t)(colon - value) : strlen(value);

        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return "an IPv6 address must be written in brackets, such as "
                   "[2001:db8::25]";
        *what = "host name";
        memcpy(host, value, len);
        host[len] = '\0';
        if (len > 0 && is_digits_and_dots(host)) {
            unsigned char addr[4];

            *what = "IPv4 address";
            why = parse_ipv4(host, addr);
            if (why != NULL)
                return why;
            memcpy(d->host, host, len + 1);
        } else {
            switch (domain_to_ascii(host, d->host, &why)) {
            case VALID:
                break;
            case INVALID:
                return why;
            case NO_MEMORY:
                *is_out_of_memory = true;
                return NULL;
            }
        }
        if (colon != NULL)
            port = colon + 1;
    }
    if (port != NULL) {
        *what = NULL;
        why = parse_port(port, &d->port);
        if (why != NULL)
            return why;
        d->has_port = true;
    }
    return NULL;
}

/*
 * The delivery destination: required for the MX-based services, optional
 * with MESH_365.  An empty string counts as not given, as a blank form
 * field does.  Returns the normalised copy, or NULL when absent or invalid.
 */
static const char *check_destination(struct check *c,
                                     const struct mw_request *req,
                                     bool is_service_known)
{
    const char *value = req->delivery_destination;

    if (value == NULL || value[0] == '\0') {
        if (is_service_known && req->service != MW_SERVICE_MESH_365)
            rules_add_error(c->rej, "delivery_destination",
                            MW_REJ_DELIVERY_DESTINATION_REQUIRED,
                            "A delivery destination for clean email is "
                            "required with %s, but none was given.",
                            mw_service_names[req->service]);
        return NULL;
    }
    return rules_check_destination_value(c, value);
}

const char *rules_check_destination_value(struct check *c, const char *value)
{
    const char *field = "delivery_destination";
    char shown[SHOWN_BUF];
    struct destination d;
    const char *why, *what, *copy;
    bool is_out_of_memory = false;

    why = parse_destination(value, &d, &what, &is_out_of_memory);
    if (is_out_of_memory) {
        c->is_out_of_memory = true;
        return NULL;
    }
    if (why != NULL) {
        if (what != NULL)
            rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                            "The delivery destination \"%s\" is not a valid "
                            "%s: %s.",
                            rules_show(shown, value), what, why);
        else
            rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                            "The delivery destination \"%s\" is not valid: "
                            "%s.",
                            rules_show(shown, value), why);
        return NULL;
    }
    if (d.has_port)
        copy = arena_printf(c->arena, "%s:%u", d.host, d.port);
    else
        copy = arena_strdup(c->arena, d.host);
    if (copy == NULL)
        c->is_out_of_memory = true;
    return copy;
}

/* Reports an enum value outside its symbols; returns true when known. */
bool rules_check_enum(struct check *c, const char *field, const char *label,
                      int value, const char *const *names, int count)
{
    char list[160] = "";
    size_t len = 0;

    if (value >= 0 && value < count)
        return true;
    for (int i = 0; i < count && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
                                i == 0 ? "" : ", ", names[i]);
    rules_add_error(c->rej, field, MW_REJ_INVALID_FIELD,
                    "The %s value %d is not one of %s.", label, value, list);
    return false;
}

/* Copies an optional string into the arena, flagging lack of memory. */
const char *rules_duplicate(struct check *c, const char *s)
{
    const char *p;

    if (s == NULL)
        return NULL;
    p = arena_strdup(c->arena, s);
    if (p == NULL)
        c->is_out_of_memory = true;
    return p;
}

/* Checks the fields every request and termination carries first. */
void rules_check_origin(struct check *c, const char *request_id,
                        const char *requested_by, const char *msp_id)
{
    rules_check_uuid_field(c, "request_id", "request id", request_id);
    check_email_field(c, "requested_by", "requesting user's e-mail address",
                      requested_by);
    if (!rules_is_missing(c, "msp_id", "MSP id", msp_id))
        rules_check_text_field(c, "msp_id", "MSP id", msp_id, MW_MAX_ID);
}

int rules_check_request(const struct mw_request *req, struct mw_arena *arena,
                        struct mw_request *out, struct mw_rejection *rej)
{
    struct check c = {.arena = arena, .rej = rej};
    bool is_platform_known, is_service_known;
    bool is_nfr = req->account_type == MW_ACCOUNT_NFR;
    const char *msp_domain, *primary = NULL, *destination;
    const char **additional;
    struct mw_request result = *req;

    rej->count = 0;
    rules_check_origin(&c, req->request_id, req->requested_by, req->msp_id);
    msp_domain =
        check_domain_field(&c, "msp_domain", "MSP domain", req->msp_domain);

    is_platform_known = rules_check_enum(
        &c, "mail_platform", "mail platform", req->mail_platform,
        mw_mail_platform_names, MW_PLATFORM_COUNT);
    is_service_known = rules_check_enum(&c, "service", "service", req->service,
                                        mw_service_names, MW_SERVICE_COUNT);
    if (is_platform_known && is_service_known &&
        req->service != MW_SERVICE_MESH_GATEWAY &&
        req->mail_platform != MW_PLATFORM_MICROSOFT_365)
        rules_add_error(rej, "service",
                        MW_REJ_SERVICE_NOT_SUPPORTED_ON_PLATFORM,
                        "The service %s needs the mail platform %s, but the "
                        "request has %s.",
                        mw_service_names[req->service],
                        mw_mail_platform_names[MW_PLATFORM_MICROSOFT_365],
                        mw_mail_platform_names[req->mail_platform]);

    if (!rules_is_missing(&c, "company_name", "company name",
                          req->company_name))
        rules_check_text_field(&c, "company_name", "company name",
                               req->company_name, MW_MAX_NAME);

    primary = check_domain_field(&c, "primary_domain", "primary domain",
                                 req->primary_domain);
    if (is_nfr && primary != NULL && msp_domain != NULL)
        check_nfr_domain(&c, "primary_domain", "primary domain",
                         req->primary_domain, primary, msp_domain);
    additional = check_additional(&c, req, primary, is_nfr ? msp_domain : NULL);

    destination = check_destination(&c, req, is_service_known);

    if (req->licenses < MW_MIN_LICENSES || req->licenses > MW_MAX_LICENSES)
        rules_add_error(rej, "licenses", MW_REJ_INVALID_FIELD,
                        "The number of licenses must be between %d and "
                        "1,000,000, but the request has %d.",
                        MW_MIN_LICENSES, (int)req->licenses);
    else if (is_nfr && req->licenses > MW_MAX_NFR_LICENSES)
        rules_add_error(rej, "licenses", MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED,
                        "An NFR account can have at most %d licenses, but "
                        "the request has %d.",
                        MW_MAX_NFR_LICENSES, (int)req->licenses);

    check_email_field(&c, "default_admin_email", "default admin e-mail address",
                      req->default_admin_email);
    if (req->policy_template_id != NULL)
        rules_check_text_field(&c, "policy_template_id", "policy template id",
                               req->policy_template_id, MW_MAX_ID);
    if (req->monitor_mode && is_service_known &&
        req->service != MW_SERVICE_MESH_365)
        rules_add_error(rej, "monitor_mode", MW_REJ_MONITOR_MODE_NOT_SUPPORTED,
                        "Monitor mode is only available with %s, but the "
                        "request asks for it with %s.",
                        mw_service_names[MW_SERVICE_MESH_365],
                        mw_service_names[req->service]);
    rules_check_enum(&c, "account_type", "account type", req->account_type,
                     mw_account_type_names, MW_ACCOUNT_COUNT);

    if (c.is_out_of_memory)
        return -1;
    if (rej->count > 0)
        return 1;

    result.request_id = rules_duplicate(&c, req->request_id);
    result.requested_by = rules_duplicate(&c, req->requested_by);
    result.msp_id = rules_duplicate(&c, req->msp_id);
    result.msp_domain = msp_domain;
    result.company_name = rules_duplicate(&c, req->company_name);
    result.primary_domain = primary;
    result.additional_domains = additional;
    result.delivery_destination = destination;
    result.default_admin_email = rules_duplicate(&c, req->default_admin_email);
    result.policy_template_id = rules_duplicate(&c, req->policy_template_id);
    if (c.is_out_of_memory)
        return -1;
    *out = result;
    return 0;
}

int rules_check_termination(const struct mw_termination_request *req,
                            struct mw_rejection *rej)
{
    struct check c = {.rej = rej};

    rej->count = 0;
    rules_check_origin(&c, req->request_id, req->requested_by, req->msp_id);
    rules_check_uuid_field(&c, "customer_id", "customer id", req->customer_id);
    if (c.is_out_of_memory)
        return -1;
    return rej->count > 0 ? 1 : 0;
}

/* ---- rejections decided after the claim ---- */

void rules_reject_taken_domains(const char *primary_domain,
                                const char *const *taken, size_t count,
                                struct mw_rejection *rej)
{
    char shown[SHOWN_BUF];

    rej->count = 0;
    for (size_t i = 0; i < count; i++) {
        const char *field = strcmp(taken[i], primary_domain) == 0
                                ? "primary_domain"
                                : "additional_domains";

        rules_add_error(rej, field, MW_REJ_DOMAIN_ALREADY_PROVISIONED,
                        "The domain \"%s\" is already provisioned for another "
                        "customer.",
                        rules_show(shown, taken[i]));
    }
    if (count == 0)
        rules_add_error(rej, "primary_domain",
                        MW_REJ_DOMAIN_ALREADY_PROVISIONED,
                        "A domain of this request is already provisioned for "
                        "another customer.");
}

void rules_reject_termination(int code, struct mw_rejection *rej)
{
    rej->count = 0;
    switch (code) {
    case MW_REJ_UNKNOWN_CUSTOMER:
        rules_add_error(rej, "customer_id", code,
                        "There is no customer with this id.");
        break;
    case MW_REJ_NOT_CUSTOMER_OWNER:
        rules_add_error(rej, "customer_id", code,
                        "The customer belongs to another MSP.");
        break;
    case MW_REJ_INVALID_FIELD:
        rules_add_error(rej, "request_id", code,
                        "The request id, MSP id or customer id is not valid "
                        "UTF-8 or is too long to be stored.");
        break;
    default: /* MW_REJ_ALREADY_TERMINATED */
        rules_add_error(rej, "customer_id", code,
                        "The customer is already terminated or has a "
                        "termination scheduled.");
        break;
    }
}

void rules_reject_conflict(const char *request_id, struct mw_rejection *rej)
{
    char shown[SHOWN_BUF];

    rej->count = 0;
    rules_add_error(rej, "request_id", MW_REJ_REQUEST_ID_CONFLICT,
                    "The request id \"%s\" was already used for a request "
                    "with other content; the first request stands.",
                    rules_show(shown, request_id));
}

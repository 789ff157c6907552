/*
 * mapping.h - "bring your own schema": turns the documents of a feed a team already has
 * (nested tweets, CSV rows, ...) into the mention model of docs/mention.md, field by field,
 * as described by a JSON mapping file (docs/tools.md). A document that does not map is a
 * per-event failure: FP_ERR_SCHEMA with the target field and its source in the reason, so it
 * can be dead-lettered like any other bad mention.
 *
 * A mapping set is loaded once and read-only afterwards: fp_mapping_apply() may be called
 * from several threads on the same fp_mapping_t.
 */
#ifndef FP_MAPPING_H
#define FP_MAPPING_H

#include <jansson.h>
#include <stddef.h>

#include "flashpoint/flashpoint.h"
#include "util.h"

/** The mapping of one topic or file (borrowed from its set). */
typedef struct fp_mapping_s fp_mapping_t;
/** A loaded mapping file: one mapping per topic or file name, plus an optional default. */
typedef struct fp_mapping_set_s fp_mapping_set_t;

/**
 * Loads and validates a mapping file: {"topics": {NAME: FIELDS, ...}}, {"files": {...}} or
 * {"fields": FIELDS} (one mapping for every input). Unknown options and malformed sources
 * fail here, with the topic and target field in @p errstr.
 * @returns the set (owned: fp_mapping_set_destroy) or NULL.
 */
fp_mapping_set_t *fp_mapping_set_load(const char *path, char *errstr, size_t errstr_size);

/** Same from an already parsed document (borrowed for the call). */
fp_mapping_set_t *fp_mapping_set_from_json(json_t *spec, char *errstr, size_t errstr_size);

/**
 * The identity mapping of a CSV header: each column named like a mention field ("id",
 * "author.followers", "created_at", ...) maps to it with that field's type; other columns
 * are kept as strings. @p names is borrowed for the call. @returns owned, or NULL.
 */
fp_mapping_set_t *fp_mapping_set_csv_identity(const char *const *names, size_t n, char *errstr,
                                              size_t errstr_size);

void fp_mapping_set_destroy(fp_mapping_set_t *set);

/**
 * The mapping for an input: the exact topic (or file) name, else the file's base name
 * with and without its extensions ("tweets.jsonl.gz" -> "tweets.jsonl.gz", "tweets"),
 * else "*", else the set's only mapping ("fields" form).
 * @returns a mapping borrowed from @p set, or NULL when none applies.
 */
const fp_mapping_t *fp_mapping_set_find(const fp_mapping_set_t *set, const char *name);

/** The name the mapping was declared under (borrowed). */
const char *fp_mapping_name(const fp_mapping_t *m);

/**
 * Maps one document.
 * @param doc_in borrowed (not modified).
 * @param doc_out receives a new JSON object (owned by the caller) on success.
 * @returns FP_OK, or FP_ERR_SCHEMA with "mapping NAME: field TARGET (from SOURCE): why" in
 *          @p errstr.
 */
fp_err_t fp_mapping_apply(const fp_mapping_t *m, json_t *doc_in, json_t **doc_out, char *errstr,
                          size_t errstr_size);

/**
 * Bytes in, bytes out: parses @p buf as JSON, maps it and writes the compact mention JSON
 * into @p out (reset first). The hook for the Kafka path (pipeline.c) before
 * fp_mention_decode().
 * @returns FP_OK, FP_ERR_DECODE (not JSON or not an object) or FP_ERR_SCHEMA.
 */
fp_err_t fp_mapping_transform(const fp_mapping_t *m, const void *buf, size_t len, fp_buf_t *out,
                              char *errstr, size_t errstr_size);

/**
 * Parses a timestamp in one of the formats a mapping accepts: "auto" (any of the others),
 * "rfc3339", "twitter" ("Wed Oct 10 20:19:24 +0000 2018"), "epoch_s", "epoch_ms". Numbers
 * (JSON or digit strings) are epoch seconds below 1e11 and milliseconds above in "auto".
 * @returns FP_OK or FP_ERR_SCHEMA.
 */
fp_err_t fp_mapping_parse_time(json_t *v, const char *format, int64_t *ms_out);

#endif

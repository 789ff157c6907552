/*
 * mention.h - the mention model: bytes from Kafka in, a validated mention (or a reason to
 * dead-letter) out. docs/mention.md is the contract this module enforces.
 */
#ifndef FP_MENTION_H
#define FP_MENTION_H

#include <jansson.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"

/**
 * A decoded mention. Every `const char *` is borrowed from `doc` and lives as long as the
 * mention; optional ones are NULL when absent.
 */
typedef struct fp_mention_s {
  json_t *doc;            /* owned: the canonical mention object */
  const char *id;         /* required */
  const char *platform;   /* optional */
  const char *brand;      /* brand, or the first of `entities`; never NULL after decode */
  const char *author_id;  /* required: author.id */
  const char *text;       /* required */
  const char *lang;       /* optional */
  const char *reshare_of; /* optional: id of the root post this one reshares */
  const char *url;        /* optional */
  int64_t created_at_ms;  /* required: event time */
  int64_t followers;      /* author.followers, 0 if absent */
  int verified;           /* author.verified, 0 if absent */
  double sentiment;       /* in [-1, 1]; valid when has_sentiment */
  int has_sentiment;
  int64_t likes, reshares, replies; /* engagement.*, 0 if absent */
} fp_mention_t;

/**
 * Decodes and validates one message.
 * @param max_bytes messages longer than this fail with FP_ERR_TOO_LARGE before parsing.
 * @param out zeroed and filled on success; untouched (no allocation kept) on failure.
 * @returns FP_OK, FP_ERR_TOO_LARGE, FP_ERR_DECODE or FP_ERR_SCHEMA with a reason naming the
 *          field in @p errstr.
 */
fp_err_t fp_mention_decode(const void *buf, size_t len, size_t max_bytes, fp_mention_t *out,
                           char *errstr, size_t errstr_size);

/** Releases what @p m owns and zeroes it. NULL and zeroed mentions are fine. */
void fp_mention_clear(fp_mention_t *m);

#endif

/*
 * mention.c - owns the decoding of input bytes into a validated mention.
 *
 * Order of checks, cheapest first: size cap (before any parsing), JSON parse with
 * duplicate keys rejected (which value would a rule see?), then the schema of
 * docs/mention.md field by field, each failure naming the field. On success the mention
 * keeps the parsed document and points into it; on failure nothing is kept. The canonical
 * form adds `created_at_ms` (the event time as epoch milliseconds) and `brand` (the first
 * entity when only `entities` was given), so rules see one shape whatever the producer sent.
 */
#include "mention.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jarena.h"
#include "jdecode.h"
#include "util.h"

/* Mentions older than this or further in the future than FP_MAX_FUTURE_MS are rejected:
 * they would be silently meaningless in any window. */
#define FP_MIN_TIME_MS 946684800000LL /* 2000-01-01 */
#define FP_MAX_FUTURE_MS (366LL * 86400 * 1000)
#define FP_MAX_TEXT 65536
#define FP_MAX_COUNT 1000000000000LL /* followers, likes...: more is a data error, not a crisis */

static fp_err_t opt_string(json_t *obj, const char *name, const char *path, const char **out,
                           char *errstr, size_t es) {
  json_t *v = json_object_get(obj, name);
  *out = NULL;
  if (!v || json_is_null(v)) return FP_OK;
  if (!json_is_string(v))
    return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field %s: expected a string", path);
  *out = json_string_value(v);
  return FP_OK;
}

static fp_err_t opt_int(json_t *obj, const char *name, const char *path, int64_t *out,
                        char *errstr, size_t es) {
  json_t *v = json_object_get(obj, name);
  *out = 0;
  if (!v || json_is_null(v)) return FP_OK;
  if (json_is_integer(v)) {
    if (json_integer_value(v) < 0)
      return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field %s: must not be negative", path);
    if (json_integer_value(v) > FP_MAX_COUNT)
      return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field %s: larger than %lld", path, (long long)FP_MAX_COUNT);
    *out = json_integer_value(v);
    return FP_OK;
  }
  if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) <= (double)FP_MAX_COUNT) {
    *out = (int64_t)json_real_value(v);
    return FP_OK;
  }
  return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field %s: expected a non-negative integer", path);
}

static fp_err_t decode_time(json_t *v, int64_t *out, char *errstr, size_t es) {
  if (!v || json_is_null(v))
    return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field created_at: required");
  if (json_is_integer(v)) {
    int64_t t = json_integer_value(v);
    /* Epoch seconds are accepted too: anything before 1e11 cannot be milliseconds here. */
    if (t > 0 && t < 100000000000LL) t *= 1000;
    *out = t;
  } else if (json_is_string(v)) {
    if (fp_time_parse_rfc3339(json_string_value(v), out) != FP_OK)
      return fp_seterr(errstr, es, FP_ERR_SCHEMA,
                       "field created_at: not an RFC 3339 timestamp or epoch milliseconds");
  } else {
    return fp_seterr(errstr, es, FP_ERR_SCHEMA,
                     "field created_at: expected an RFC 3339 string or epoch milliseconds");
  }
  if (*out < FP_MIN_TIME_MS || *out > fp_now_ms() + FP_MAX_FUTURE_MS)
    return fp_seterr(errstr, es, FP_ERR_SCHEMA, "field created_at: out of range");
  return FP_OK;
}

fp_err_t fp_mention_decode(const void *buf, size_t len, size_t max_bytes, fp_mention_t *out,
                           char *errstr, size_t es) {
  fp_mention_t m;
  char jerr[160];
  json_t *v, *author, *eng;
  fp_err_t err;

  memset(&m, 0, sizeof(m));
  if (len > max_bytes)
    return fp_seterr(errstr, es, FP_ERR_TOO_LARGE, "message of %zu bytes exceeds %zu", len,
                     max_bytes);
  if (!buf || len == 0)
    return fp_seterr(errstr, es, FP_ERR_DECODE, "empty message (null value or tombstone)");
  m.doc = fp_json_decode(buf, len, jerr, sizeof(jerr));
  if (!m.doc) return fp_seterr(errstr, es, FP_ERR_DECODE, "invalid JSON %s", jerr);
  if (!json_is_object(m.doc)) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "mention must be a JSON object");
    goto fail;
  }

  v = json_object_get(m.doc, "id");
  if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field id: required non-empty string (<= 256 bytes)");
    goto fail;
  }
  m.id = json_string_value(v);

  v = json_object_get(m.doc, "text");
  if (!json_is_string(v)) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field text: required string");
    goto fail;
  }
  if (json_string_length(v) > FP_MAX_TEXT) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field text: longer than %d bytes", FP_MAX_TEXT);
    goto fail;
  }
  m.text = json_string_value(v);

  if ((err = decode_time(json_object_get(m.doc, "created_at"), &m.created_at_ms, errstr, es)))
    goto fail;

  author = json_object_get(m.doc, "author");
  if (!json_is_object(author)) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field author: required object");
    goto fail;
  }
  if ((err = opt_string(author, "id", "author.id", &m.author_id, errstr, es))) goto fail;
  if (!m.author_id || !*m.author_id) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field author.id: required non-empty string");
    goto fail;
  }
  if ((err = opt_int(author, "followers", "author.followers", &m.followers, errstr, es))) goto fail;
  v = json_object_get(author, "verified");
  if (v && !json_is_null(v) && !json_is_boolean(v)) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field author.verified: expected a boolean");
    goto fail;
  }
  m.verified = json_is_true(v);

  if ((err = opt_string(m.doc, "brand", "brand", &m.brand, errstr, es))) goto fail;
  v = json_object_get(m.doc, "entities");
  if (v && !json_is_null(v)) {
    size_t i;
    json_t *e;
    if (!json_is_array(v)) {
      err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field entities: expected an array of strings");
      goto fail;
    }
    json_array_foreach(v, i, e) {
      if (!json_is_string(e)) {
        err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field entities[%zu]: expected a string", i);
        goto fail;
      }
    }
    if (!m.brand && json_array_size(v) > 0) {
      json_object_set(m.doc, "brand", json_array_get(v, 0));
      m.brand = json_string_value(json_object_get(m.doc, "brand"));
    }
  }
  if (!m.brand || !*m.brand) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field brand: required (brand or entities)");
    goto fail;
  }
  v = json_object_get(m.doc, "hashtags");
  if (v && !json_is_null(v) && !json_is_array(v)) {
    err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field hashtags: expected an array of strings");
    goto fail;
  }

  if ((err = opt_string(m.doc, "platform", "platform", &m.platform, errstr, es))) goto fail;
  if ((err = opt_string(m.doc, "lang", "lang", &m.lang, errstr, es))) goto fail;
  if ((err = opt_string(m.doc, "url", "url", &m.url, errstr, es))) goto fail;
  if ((err = opt_string(m.doc, "reshare_of", "reshare_of", &m.reshare_of, errstr, es))) goto fail;

  eng = json_object_get(m.doc, "engagement");
  if (eng && !json_is_null(eng)) {
    if (!json_is_object(eng)) {
      err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field engagement: expected an object");
      goto fail;
    }
    if ((err = opt_int(eng, "likes", "engagement.likes", &m.likes, errstr, es)) ||
        (err = opt_int(eng, "reshares", "engagement.reshares", &m.reshares, errstr, es)) ||
        (err = opt_int(eng, "replies", "engagement.replies", &m.replies, errstr, es)))
      goto fail;
  }

  v = json_object_get(m.doc, "sentiment");
  if (v && !json_is_null(v)) {
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < -1.0 ||
        json_number_value(v) > 1.0) {
      err = fp_seterr(errstr, es, FP_ERR_SCHEMA, "field sentiment: expected a number in [-1, 1]");
      goto fail;
    }
    m.sentiment = json_number_value(v);
    m.has_sentiment = 1;
  }
  json_object_set_new(m.doc, "created_at_ms", json_integer(m.created_at_ms));
  *out = m;
  return FP_OK;
fail:
  json_decref(m.doc);
  return err;
}

void fp_mention_clear(fp_mention_t *m) {
  if (!m) return;
  /* decoded in an arena (jarena.h): the document is arena memory throughout, and the
   * arena's reset frees it; walking it to free nothing cost 6% of a worker's CPU */
  if (!fp_jarena_owns(m->doc)) json_decref(m->doc);
  memset(m, 0, sizeof(*m));
}

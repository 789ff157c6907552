/*
 * hostile.c: the malformed and hostile messages of the fault suite's I rows.
 *
 * After each chunk of good mentions, fx_hostile_produce() sends one set of messages of its
 * kind, keyed by brands so they land in the partitions of good mentions (the neighbours that
 * must be unaffected), and adds each message to the model: .bad when the engine must
 * dead-letter it (docs/mention.md: decode, schema, too_large, late), .valid when it must
 * count it. Values are built here, so the suite commits no data files.
 *
 * Invariant: every message sent is accounted in ctx->sent exactly once, so the end offsets
 * equal valid + bad.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define BIG_BYTES (2 * 1024 * 1024)

typedef struct {
  char *value; /* owned; NULL for a tombstone */
  size_t len;
  int valid;   /* the engine must count it (else dead-letter it) */
} hmsg_t;

typedef struct {
  hmsg_t m[16];
  size_t n;
} hset_t;

static void add(hset_t *s, const void *value, size_t len, int valid) {
  hmsg_t *m = &s->m[s->n++];
  m->value = value ? malloc(len + 1) : NULL;
  if (m->value) {
    memcpy(m->value, value, len);
    m->value[len] = '\0';
  }
  m->len = value ? len : 0;
  m->valid = valid;
}

static void addf(hset_t *s, int valid, const char *fmt, ...) FPT_PRINTF(3, 4);
static void addf(hset_t *s, int valid, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  add(s, buf, n < 0 ? 0 : (size_t)n >= sizeof(buf) ? sizeof(buf) - 1 : (size_t)n, valid);
}

/* A good mention's fields, with @p text (raw JSON string content) and @p created_at. */
#define GOOD_FMT "{\"id\":\"h-%d-%d\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\",\"followers\":3},\"text\":\"%s\",\"created_at\":%" PRId64 "}"

const char *fx_hostile_topic_config(int kind) { return kind == 5 ? "4194304" : NULL; }

int fx_hostile_produce(fx_ctx_t *ctx, int kind, int at) {
  int chunk = ctx->n / ctx->nchunks, first = at * chunk, last = first + chunk - 1;
  int64_t t_last = FX_T0 + (int64_t)last * FX_STEP_MS;
  char brand[24];
  hset_t s = {0};
  int rc = 0;

  snprintf(brand, sizeof(brand), "brand-%02d", (at * 7) % FX_NBRANDS);
  switch (kind) {
  case 1: /* truncated, trailing garbage, not an object */
    addf(&s, 0, "{\"id\":\"h-%d-1\",\"brand\":\"%s\",\"text\":", kind, brand);
    addf(&s, 0, GOOD_FMT " trailing", kind, 2, brand, "garbage after", t_last);
    addf(&s, 0, "[1,2,3]");
    addf(&s, 0, "\"just a string\"");
    addf(&s, 0, "42");
    break;
  case 2: { /* invalid UTF-8 (raw bytes), an overlong '/', a lone surrogate escape */
    char buf[512];
    int n = snprintf(buf, sizeof(buf), GOOD_FMT, kind, 1, brand, "bad \xff\xfe bytes", t_last);
    add(&s, buf, (size_t)n, 0);
    n = snprintf(buf, sizeof(buf), GOOD_FMT, kind, 2, brand, "overlong \xc0\xaf slash", t_last);
    add(&s, buf, (size_t)n, 0);
    addf(&s, 0, GOOD_FMT, kind, 3, brand, "lone \\ud800 surrogate", t_last);
    break;
  }
  case 3: { /* \u0000 escaped, a raw NUL inside a string, a raw NUL after the document */
    char buf[512];
    int n;
    addf(&s, 0, GOOD_FMT, kind, 1, brand, "nul \\u0000 escaped", t_last);
    n = snprintf(buf, sizeof(buf), GOOD_FMT, kind, 2, brand, "raw # nul", t_last);
    *strchr(buf, '#') = '\0';
    add(&s, buf, (size_t)n, 0);
    n = snprintf(buf, sizeof(buf), GOOD_FMT "#", kind, 3, brand, "nul after", t_last);
    buf[n - 1] = '\0';
    add(&s, buf, (size_t)n, 0);
    break;
  }
  case 4: { /* nesting 3000 deep in an extra field (jansson's limit is 2048) */
    size_t depth = 3000, len = 0;
    char *buf = malloc(2 * depth + 512);
    if (!buf) return -1;
    len = (size_t)snprintf(buf, 512, "{\"id\":\"h-%d-1\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"deep\","
                           "\"created_at\":%" PRId64 ",\"deep\":", kind, brand, t_last);
    memset(buf + len, '[', depth);
    memset(buf + len + depth, ']', depth);
    len += 2 * depth;
    buf[len++] = '}';
    add(&s, buf, len, 0);
    free(buf);
    break;
  }
  case 5: { /* 2 MiB, valid JSON otherwise: too_large before parsing; only every 4th chunk */
    char *buf;
    size_t len;
    if (at % 4 != 0) break;
    if (!(buf = malloc(BIG_BYTES + 512))) return -1;
    len = (size_t)snprintf(buf, 512, "{\"id\":\"h-%d-1\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"created_at\":%" PRId64
                           ",\"text\":\"", kind, brand, t_last);
    memset(buf + len, 'x', BIG_BYTES);
    len += BIG_BYTES;
    memcpy(buf + len, "\"}", 2);
    len += 2;
    add(&s, buf, len, 0);
    free(buf);
    break;
  }
  case 6: /* duplicate keys, top level and nested */
    addf(&s, 0, "{\"id\":\"h-%d-1\",\"id\":\"h-%d-1b\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"t\",\"created_at\":%" PRId64 "}",
         kind, kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-2\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\",\"id\":\"u8\"},\"text\":\"t\",\"created_at\":%" PRId64 "}",
         kind, brand, t_last);
    break;
  case 7: /* missing and ill-typed fields, out-of-range numbers */
    addf(&s, 0, "{\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"no id\",\"created_at\":%" PRId64 "}", brand, t_last);
    addf(&s, 0, "{\"id\":\"\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"empty id\",\"created_at\":%" PRId64 "}", brand, t_last);
    addf(&s, 0, "{\"id\":\"%0300d\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"long id\",\"created_at\":%" PRId64 "}", 7, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-4\",\"brand\":\"%s\",\"text\":\"no author\",\"created_at\":%" PRId64 "}", kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-5\",\"brand\":\"%s\",\"author\":{\"id\":7},\"text\":\"author id a number\",\"created_at\":%" PRId64 "}", kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-6\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":5,\"created_at\":%" PRId64 "}", kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-7\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\",\"followers\":-1},\"text\":\"t\",\"created_at\":%" PRId64 "}", kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-8\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\",\"followers\":100000000000000000000000000000},\"text\":\"t\",\"created_at\":%" PRId64 "}",
         kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-9\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"t\",\"created_at\":\"yesterday\"}", kind, brand);
    addf(&s, 0, "{\"id\":\"h-%d-10\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"t\",\"sentiment\":5,\"created_at\":%" PRId64 "}", kind, brand, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-11\",\"author\":{\"id\":\"u7\"},\"text\":\"no brand\",\"created_at\":%" PRId64 "}", kind, t_last);
    addf(&s, 0, "{\"id\":\"h-%d-12\",\"brand\":\"%s\",\"author\":{\"id\":\"u7\"},\"text\":\"t\"}", kind, brand);
    break;
  case 8: /* a tombstone and an empty value */
    add(&s, NULL, 0, 0);
    add(&s, "", 0, 0);
    break;
  case 9: /* before 2000, two years ahead, a day older than the partition (late), 1 min back */
    addf(&s, 0, GOOD_FMT, kind, 1, brand, "ancient", (int64_t)946684799000LL);
    addf(&s, 0, GOOD_FMT, kind, 2, brand, "future", (int64_t)(t_last + 2LL * 365 * 86400000));
    if (at > 0) addf(&s, 0, GOOD_FMT, kind, 3, brand, "a day late", (int64_t)(FX_T0 - 86400000LL));
    addf(&s, 1, GOOD_FMT, kind, 4 + at, brand, "a minute back", t_last - 60000);
    break;
  case 10: { /* the first mention of the chunk again, byte for byte (counted again) */
    fpe_gen_t g = {first, 1, FX_NBRANDS, FX_T0, FX_STEP_MS, 0, ctx->n - FX_QUIET_TAIL};
    return fpe_produce(ctx->env.in, &g, &ctx->sent);
  }
  default:
    FPT_FAIL("no hostile kind %d", kind);
    return -1;
  }
  if (s.n) {
    fpt_msg_t msgs[16];
    memset(msgs, 0, sizeof(msgs));
    for (size_t i = 0; i < s.n; i++) {
      msgs[i].partition = RD_KAFKA_PARTITION_UA;
      msgs[i].key = brand;
      msgs[i].value = s.m[i].value;
      msgs[i].len = s.m[i].len;
      if (s.m[i].valid) ctx->sent.valid++;
      else ctx->sent.bad++;
    }
    if (fpt_produce(ctx->env.in, msgs, s.n) != 0) rc = -1;
  }
  for (size_t i = 0; i < s.n; i++) free(s.m[i].value);
  return rc;
}

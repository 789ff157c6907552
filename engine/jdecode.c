/*
 * jdecode.c - owns the decoding of input JSON (every mention, every mapped input message)
 * into jansson values.
 *
 * Why not json_loadb: jansson's lexer reads a character at a time through a stream
 * callback; on a 300-byte mention it was 4.5 us of the engine's ~12 us per mention, a third
 * of its CPU. yajl (a SAX parser, Debian's libyajl) lexes the same bytes in ~1 us, and its
 * callbacks build the same jansson tree, so nothing downstream changes.
 *
 * Same result, same rejections as json_loadb(JSON_REJECT_DUPLICATES):
 *  - yajl checks the syntax (no comments, no trailing garbage, one value);
 *  - jansson checks every string and key for valid UTF-8 (json_stringn, json_object_setn_new:
 *    overlong forms, surrogates and code points past U+10FFFF are invalid, which yajl's own
 *    check lets through), and here "\u0000", a NUL in a key, a duplicate key, a scalar at the
 *    top and nesting deeper than jansson's 2048 are refused;
 *  - a "\u" escape of a UTF-16 surrogate goes to json_loadb itself: yajl turns a lone or
 *    mismatched one into '?' or into a wrong code point where jansson refuses it, and such
 *    documents are rare (a producer escaping emoji), so the slow path keeps them exact.
 * One difference, on purpose: a raw NUL byte outside a string is refused; json_loadb drops
 * one that follows a number or a literal ("[1\0]" reads as [1]), a quirk of its lexer.
 * tests/unit/test_jdecode.c compares the two on valid and invalid documents.
 */
#include "jdecode.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define FP_JSON_MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

typedef struct {
  json_t **stack;                   /* open containers, innermost last: inline, or heap when deep */
  json_t *inline_stack[32];
  int sp, cap;
  json_t *root;                     /* the top container (a reference of its own) */
  char kbuf[256], *key;             /* the pending object key: kbuf, or heap when longer */
  size_t klen;
  const char *why;                  /* a callback's refusal */
  yajl_handle h;
  size_t end;                       /* where the top container closed (0: not yet) */
} builder_t;

static int refuse(builder_t *b, const char *why) {
  b->why = why;
  return 0;
}

/* Adds v (a new reference, may be NULL: out of memory or invalid UTF-8) where the parser is. */
static int add(builder_t *b, json_t *v, const char *why_null) {
  if (!v) return refuse(b, why_null);
  if (b->sp == 0) { /* only a container can be here: scalars at the top are refused first */
    b->root = v;
    return 1;
  }
  json_t *top = b->stack[b->sp - 1];
  if (json_is_array(top)) {
    if (json_array_append_new(top, v)) return refuse(b, "out of memory");
    return 1;
  }
  /* a duplicate key replaces the value and leaves the size: one hash lookup, not two */
  size_t size = json_object_size(top);
  if (json_object_setn_new(top, b->key, b->klen, v)) return refuse(b, "invalid UTF-8 in an object key");
  if (json_object_size(top) == size) return refuse(b, "duplicate object key");
  return 1;
}

static int on_null(void *ctx) { return add(ctx, json_null(), "out of memory"); }
static int on_bool(void *ctx, int v) { return add(ctx, json_boolean(v), "out of memory"); }
/* A number as jansson reads it (yajl checked its syntax): an integer when it has no fraction
 * or exponent (refused past json_int_t, where yajl's own would also refuse its minimum),
 * else a real (refused when it overflows). */
static int on_number(void *ctx, const char *s, size_t len) {
  if (len <= 18) { /* an integer of up to 18 digits (most numbers): no copy, no strtoll */
    size_t i = s[0] == '-';
    long long v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
    if (i == len) return add(ctx, json_integer((json_int_t)(s[0] == '-' ? -v : v)), "out of memory");
  }
  char tmp[64], *t = len < sizeof(tmp) ? tmp : malloc(len + 1);
  if (!t) return refuse(ctx, "out of memory");
  memcpy(t, s, len);
  t[len] = '\0';
  char *end;
  int ok;
  errno = 0;
  if (!memchr(t, '.', len) && !memchr(t, 'e', len) && !memchr(t, 'E', len)) {
    long long v = strtoll(t, &end, 10);
    ok = errno == ERANGE ? refuse(ctx, "too big integer") : add(ctx, json_integer((json_int_t)v), "out of memory");
  } else {
    double v = strtod(t, &end);
    ok = errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL) ? refuse(ctx, "real number overflow")
                                                              : add(ctx, json_real(v), "out of memory");
  }
  if (t != tmp) free(t);
  return ok;
}

static int on_string(void *ctx, const unsigned char *s, size_t len) {
  if (memchr(s, 0, len)) return refuse(ctx, "\\u0000 is not allowed");
  return add(ctx, json_stringn((const char *)s, len), "invalid UTF-8 in a string");
}

static int on_key(void *ctx, const unsigned char *s, size_t len) {
  builder_t *b = ctx;
  if (memchr(s, 0, len)) return refuse(b, "NUL byte in object key not supported");
  if (b->key != b->kbuf) free(b->key);
  b->key = len < sizeof(b->kbuf) ? b->kbuf : malloc(len + 1);
  if (!b->key) {
    b->key = b->kbuf;
    return refuse(b, "out of memory");
  }
  memcpy(b->key, s, len);
  b->key[len] = '\0';
  b->klen = len;
  return 1;
}

static int open_container(builder_t *b, json_t *c) {
  if (b->sp == FP_JSON_MAX_DEPTH) {
    json_decref(c);
    return refuse(b, "maximum parsing depth reached");
  }
  if (b->sp == b->cap) { /* deeper than any mention: move the stack to the heap */
    int cap = b->cap * 4 < FP_JSON_MAX_DEPTH ? b->cap * 4 : FP_JSON_MAX_DEPTH;
    json_t **s = malloc((size_t)cap * sizeof(*s));
    if (!s) {
      json_decref(c);
      return refuse(b, "out of memory");
    }
    memcpy(s, b->stack, (size_t)b->sp * sizeof(*s));
    if (b->stack != b->inline_stack) free(b->stack);
    b->stack = s, b->cap = cap;
  }
  if (!add(b, c, "out of memory")) return 0;
  b->stack[b->sp++] = c;
  return 1;
}

static int on_start_map(void *ctx) { return open_container(ctx, json_object()); }
static int on_start_array(void *ctx) { return open_container(ctx, json_array()); }
static int on_end(void *ctx) {
  builder_t *b = ctx;
  if (--b->sp == 0) b->end = yajl_get_bytes_consumed(b->h); /* just past the bracket */
  return 1;
}

static const yajl_callbacks callbacks = {on_null, on_bool, NULL, NULL, on_number, on_string,
                                         on_start_map, on_key, on_end, on_start_array, on_end};

/* 1 if the text may hold a "\u" escape of a UTF-16 surrogate (D800-DFFF). */
static int surrogate_escape(const char *p, size_t n) {
  const char *end = p + n;
  while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
    if (end - p >= 4 && p[1] == 'u' && (p[2] | 0x20) == 'd' && strchr("89abcdefABCDEF", p[3]))
      return 1;
    p += 2; /* the escaped character: "\\u" is a backslash, then a plain u */
    if (p >= end) break;
  }
  return 0;
}

static json_t *slow_path(const char *buf, size_t len, char *errstr, size_t es) {
  json_error_t jerr;
  json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!doc && errstr && es) snprintf(errstr, es, "at byte %d: %s", jerr.position, jerr.text);
  return doc;
}

json_t *fp_json_decode(const void *data, size_t len, char *errstr, size_t es) {
  const char *buf = data;
  size_t i = 0;
  while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
  if (i == len || (buf[i] != '{' && buf[i] != '[')) {
    if (errstr && es) snprintf(errstr, es, "at byte %zu: '[' or '{' expected", i);
    return NULL;
  }
  if (surrogate_escape(buf, len)) return slow_path(buf, len, errstr, es);

  builder_t bb, *b = &bb;
  yajl_handle h = yajl_alloc(&callbacks, NULL, b);
  if (!h) {
    if (errstr && es) snprintf(errstr, es, "at byte 0: out of memory");
    return NULL;
  }
  b->stack = b->inline_stack, b->cap = (int)(sizeof(b->inline_stack) / sizeof(b->inline_stack[0]));
  b->sp = 0, b->root = NULL, b->key = b->kbuf, b->klen = 0, b->why = NULL, b->h = h, b->end = 0;
  yajl_config(h, yajl_dont_validate_strings, 1); /* jansson checks UTF-8, more strictly */
  yajl_status st = yajl_parse(h, (const unsigned char *)buf, len);
  if (st == yajl_status_ok) st = yajl_complete_parse(h);
  /* yajl keeps an unfinished token after the value (a '"' without its end) as pending
   * input, not as garbage: only whitespace may follow the top container */
  for (size_t j = b->end; st == yajl_status_ok && j < len; j++)
    if (buf[j] != ' ' && buf[j] != '\t' && buf[j] != '\n' && buf[j] != '\r') {
      b->why = "end of file expected";
      st = yajl_status_error;
      b->end = j;
    }
  json_t *doc = b->root;
  if (st != yajl_status_ok) {
    if (errstr && es) {
      size_t at = b->end && b->why ? b->end : yajl_get_bytes_consumed(h);
      if (b->why) {
        snprintf(errstr, es, "at byte %zu: %s", at, b->why);
      } else {
        unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
        const char *m = msg ? (const char *)msg : "parse error";
        if (!strncmp(m, "parse error: ", 13)) m += 13;
        size_t ml = strcspn(m, "\n");
        snprintf(errstr, es, "at byte %zu: %.*s", at, (int)ml, m);
        if (msg) yajl_free_error(h, msg);
      }
    }
    json_decref(doc);
    doc = NULL;
  }
  yajl_free(h);
  if (b->key != b->kbuf) free(b->key);
  if (b->stack != b->inline_stack) free(b->stack);
  return doc;
}

/*
 * store_lc.c - owns the C side of the lifecycle half of the store (store_lc.h): argument
 * marshalling for store_lifecycle.lua and reply parsing. The semantics live in the script,
 * which both backends run, so the Redis and in-process stores agree by construction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "store_lc.h"
#include "util.h"

extern const fp_store_script_t fp_store_lifecycle_script;

#define FP_LC_STATE_TTL_MS (7LL * 86400 * 1000)
/* A source whose watermark has not moved for this long (wall clock) no longer holds back
 * the low watermark that sweeps use (an idle partition must not stop resolutions). */
#define FP_LC_IDLE_MS (60LL * 1000)

/* A small argv builder: strings are either borrowed (caller keeps them alive for the call)
 * or formatted numbers kept in an owned arena. */
typedef struct {
  const char **v;
  size_t *l;
  size_t n, cap;
  char (*nums)[24];
  size_t nn, ncap;
} lc_args_t;

static int args_add(lc_args_t *a, const char *s, size_t len) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 32;
    const char **v = realloc(a->v, cap * sizeof(*v));
    size_t *l;
    if (!v) return -1;
    a->v = v;
    if (!(l = realloc(a->l, cap * sizeof(*l)))) return -1;
    a->l = l;
    a->cap = cap;
  }
  a->v[a->n] = s;
  a->l[a->n++] = len;
  return 0;
}

static int args_str(lc_args_t *a, const char *s) { return args_add(a, s, strlen(s)); }

static int args_num(lc_args_t *a, int64_t x) {
  if (a->nn == a->ncap) return -1; /* sized up front: pointers into nums must stay put */
  snprintf(a->nums[a->nn], sizeof(a->nums[0]), "%lld", (long long)x);
  return args_str(a, a->nums[a->nn++]);
}

static int args_init(lc_args_t *a, size_t nnums) {
  memset(a, 0, sizeof(*a));
  a->ncap = nnums;
  a->nums = calloc(nnums ? nnums : 1, sizeof(*a->nums));
  return a->nums ? 0 : -1;
}

static void args_free(lc_args_t *a) {
  free(a->v), free(a->l), free(a->nums);
}

static fp_err_t run(fp_store_t *s, lc_args_t *a, fp_store_reply_t *rep, char *errstr, size_t es) {
  return s->be->eval(s, &fp_store_lifecycle_script, a->n, a->v, a->l, rep, errstr, es);
}


static char *dup_reply(const fp_store_reply_t *rep, size_t i) {
  char *p;
  if (i >= rep->n || !rep->str[i]) return NULL;
  if (!(p = malloc(rep->len[i] + 1))) return NULL;
  memcpy(p, rep->str[i], rep->len[i]);
  p[rep->len[i]] = '\0';
  return p;
}

/* Splits a stored "<version> <json>" into a malloc'd JSON text and the version. */
static fp_err_t split_state(const char *p, size_t len, char **state, int64_t *version) {
  const char *sp = memchr(p, ' ', len);
  if (!sp) return FP_ERR_SCHEMA;
  *version = strtoll(p, NULL, 10);
  len -= (size_t)(sp + 1 - p);
  if (!(*state = malloc(len + 1))) return FP_ERR_NOMEM;
  memcpy(*state, sp + 1, len);
  (*state)[len] = '\0';
  return FP_OK;
}

static int due_cmp(const void *a, const void *b) {
  return strcmp(((const fp_lc_due_t *)a)->key, ((const fp_lc_due_t *)b)->key);
}

void fp_store_lc_due_free(fp_lc_due_t *due, size_t n) {
  for (size_t i = 0; due && i < n; i++) {
    free(due[i].key);
    free(due[i].state);
  }
  free(due);
}

fp_err_t fp_store_lc_load(fp_store_t *s, const char *source, const char *const *keys, size_t n,
                          int64_t wm, size_t max_due, char **states_out, int64_t *versions_out,
                          int64_t *silenced_until_out, int64_t *fence_out, int64_t *low_wm_out,
                          fp_lc_due_t **due_out, size_t *ndue_out, char *errstr, size_t es) {
  lc_args_t a;
  fp_store_reply_t rep;
  fp_err_t err = FP_ERR_NOMEM;
  size_t ndue;
  fp_lc_due_t *due = NULL;

  *due_out = NULL;
  *ndue_out = 0;
  for (size_t i = 0; i < n; i++) states_out[i] = NULL;
  *low_wm_out = INT64_MIN;
  if (args_init(&a, 5)) return FP_ERR_NOMEM;
  if (args_str(&a, "load") || args_str(&a, s->prefix) || args_str(&a, source) ||
      (wm == INT64_MIN ? args_str(&a, "-") : args_num(&a, wm)) || args_num(&a, fp_now_ms()) ||
      args_num(&a, FP_LC_IDLE_MS) || args_num(&a, (int64_t)max_due) || args_num(&a, (int64_t)n))
    goto out;
  for (size_t i = 0; i < n; i++)
    if (args_str(&a, keys[i])) goto out;
  if ((err = run(s, &a, &rep, errstr, es))) goto out;
  if (rep.n < 2 * n + 2 || !rep.str[0] || !rep.str[1] || (rep.n - 2 * n - 2) % 2) {
    err = fp_seterr(errstr, es, FP_ERR_FATAL, "store: lifecycle load: malformed reply");
    goto out;
  }
  *fence_out = strtoll(rep.str[0], NULL, 10);
  if (rep.str[1][0] != '-' || rep.len[1] > 1) *low_wm_out = strtoll(rep.str[1], NULL, 10);
  for (size_t i = 0; i < n; i++) {
    versions_out[i] = 0;
    if (rep.str[i + 2] && (err = split_state(rep.str[i + 2], rep.len[i + 2], &states_out[i], &versions_out[i]))) {
      fp_seterr(errstr, es, err, "store: lifecycle state of %s malformed", keys[i]);
      goto fail;
    }
  }
  for (size_t i = 0; i < n; i++)
    silenced_until_out[i] = rep.str[n + 2 + i] ? strtoll(rep.str[n + 2 + i], NULL, 10) : 0;
  ndue = (rep.n - 2 * n - 2) / 2;
  if (ndue && !(due = calloc(ndue, sizeof(*due)))) {
    err = FP_ERR_NOMEM;
    goto fail;
  }
  for (size_t i = 0; i < ndue; i++) {
    size_t k = 2 * n + 2 + 2 * i;
    if (!rep.str[k] || !rep.str[k + 1] || !(due[i].key = dup_reply(&rep, k)) ||
        split_state(rep.str[k + 1], rep.len[k + 1], &due[i].state, &due[i].version) != FP_OK) {
      fp_store_lc_due_free(due, ndue);
      err = fp_seterr(errstr, es, FP_ERR_FATAL, "store: lifecycle load: malformed due entry");
      goto fail;
    }
  }
  /* the index gives the earliest due first (ties by key); sorted here by key, so the sweeps
   * of one load step (and their events appear) in the same order everywhere */
  if (ndue > 1) qsort(due, ndue, sizeof(*due), due_cmp);
  *due_out = due;
  *ndue_out = ndue;
  err = FP_OK;
  goto out;
fail:
  for (size_t i = 0; i < n; i++) {
    free(states_out[i]);
    states_out[i] = NULL;
  }
out:
  args_free(&a);
  return err;
}

fp_err_t fp_store_lc_memo(fp_store_t *s, const char *source, const int64_t *offsets, size_t n,
                          char **texts_out, char *errstr, size_t es) {
  lc_args_t a;
  fp_store_reply_t rep;
  fp_err_t err = FP_ERR_NOMEM;
  if (args_init(&a, n + 1)) return FP_ERR_NOMEM;
  if (args_str(&a, "memo") || args_str(&a, s->prefix) || args_str(&a, source) ||
      args_num(&a, (int64_t)n))
    goto out;
  for (size_t i = 0; i < n; i++)
    if (args_num(&a, offsets[i])) goto out;
  if ((err = run(s, &a, &rep, errstr, es))) goto out;
  if (rep.n != n) {
    err = fp_seterr(errstr, es, FP_ERR_FATAL, "store: lifecycle memo: malformed reply");
    goto out;
  }
  for (size_t i = 0; i < n; i++) texts_out[i] = dup_reply(&rep, i);
out:
  args_free(&a);
  return err;
}

fp_err_t fp_store_lc_commit(fp_store_t *s, const char *source, const char *const *keys,
                            const int64_t *versions, const char *const *states,
                            const int64_t *due_ms, size_t n, const int64_t *memo_offsets,
                            const char *const *memo_texts, size_t nmemo, int64_t fence,
                            int64_t committed, int64_t wm, int *conflict, size_t *due_now,
                            char *errstr, size_t es) {
  lc_args_t a;
  fp_store_reply_t rep;
  fp_err_t err = FP_ERR_NOMEM;
  *conflict = 0;
  if (due_now) *due_now = 0;
  if (args_init(&a, 11 + 2 * n + nmemo)) return FP_ERR_NOMEM;
  if (args_str(&a, "commit") || args_str(&a, s->prefix) || args_str(&a, source) ||
      args_num(&a, fence) || args_num(&a, committed) || args_num(&a, s->memo_ttl_ms) ||
      args_num(&a, FP_LC_STATE_TTL_MS) ||
      (wm == INT64_MIN ? args_str(&a, "-") : args_num(&a, wm)) || args_num(&a, fp_now_ms()) ||
      args_num(&a, FP_LC_IDLE_MS) || args_num(&a, (int64_t)n))
    goto out;
  for (size_t i = 0; i < n; i++)
    if (args_str(&a, keys[i]) || args_num(&a, versions[i]) || args_str(&a, states[i]) ||
        args_num(&a, due_ms[i]))
      goto out;
  if (args_num(&a, (int64_t)nmemo)) goto out;
  for (size_t i = 0; i < nmemo; i++)
    if (args_num(&a, memo_offsets[i]) || args_str(&a, memo_texts[i])) goto out;
  if ((err = run(s, &a, &rep, errstr, es))) goto out;
  if (rep.n >= 1 && rep.str[0] && !strcmp(rep.str[0], "ok")) {
    err = FP_OK;
    if (due_now && rep.n >= 2 && rep.str[1]) *due_now = (size_t)strtoull(rep.str[1], NULL, 10);
  }
  else if (rep.n >= 1 && rep.str[0] && !strcmp(rep.str[0], "conflict")) *conflict = 1;
  else err = fp_seterr(errstr, es, FP_ERR_FATAL, "store: lifecycle commit: malformed reply");
out:
  args_free(&a);
  return err;
}

fp_err_t fp_store_lc_register(fp_store_t *s, const char *source, char *errstr, size_t es) {
  lc_args_t a;
  fp_store_reply_t rep;
  fp_err_t err = FP_ERR_NOMEM;
  if (args_init(&a, 2)) return FP_ERR_NOMEM;
  if (!args_str(&a, "register") && !args_str(&a, s->prefix) && !args_str(&a, source) &&
      !args_num(&a, fp_now_ms()) && !args_num(&a, FP_LC_STATE_TTL_MS))
    err = run(s, &a, &rep, errstr, es);
  args_free(&a);
  return err;
}

fp_err_t fp_store_lc_silence(fp_store_t *s, const char *key, int64_t until_ms, const char *reason,
                             char *errstr, size_t es) {
  lc_args_t a;
  fp_store_reply_t rep;
  fp_err_t err = FP_ERR_NOMEM;
  if (args_init(&a, 1)) return FP_ERR_NOMEM;
  if (!args_str(&a, "silence") && !args_str(&a, s->prefix) && !args_str(&a, key) &&
      !args_num(&a, until_ms) && !args_str(&a, reason ? reason : ""))
    err = run(s, &a, &rep, errstr, es);
  args_free(&a);
  return err;
}

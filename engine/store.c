/*
 * store.c - the store's public face: argument checks, the windows script's calling
 * convention (ARGV building, reply parsing), and dispatch to a backend (store_redis.c,
 * store_mem.c) through fp_store_backend_t.
 *
 * How it works: fp_store_apply turns a batch of ops into ONE script call (mode "apply",
 * 8 ARGV per op, bucket index computed here with floor division); the script
 * (store_windows.lua) applies what is above the fence, answers the rest from the memo, and
 * returns every op's result as text ("v" or "v,mean,stddev", ';'-separated, %.17g-exact),
 * which is parsed back into op->out. Numbers are formatted into one scratch buffer whose
 * offsets become pointers only once the buffer stops growing.
 *
 * Invariant callers keep: ops of one call come from one source in ascending offset order,
 * and all ops of one offset are in the same call (an offset split across two calls would be
 * fenced after the first). A window key names one spec: the same key with two specs mixes
 * their buckets.
 */
#include "store_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* Windows longer than this many buckets are refused (PFCOUNT takes them in one call). */
#define FP_STORE_MAX_BUCKETS 4000
/* Defaults for the in-process store and for unset Redis conf fields. */
#define FP_STORE_DEFAULT_MEMO_TTL_MS (3600LL * 1000)
#define FP_STORE_DEFAULT_FENCE_TTL_MS (30LL * 86400 * 1000)

fp_err_t fp_store_init_common(fp_store_t *st, const fp_store_backend_t *be, const char *prefix) {
  st->be = be;
  st->prefix = strdup(prefix && *prefix ? prefix : "fp");
  if (!st->prefix) return FP_ERR_NOMEM;
  st->memo_ttl_ms = FP_STORE_DEFAULT_MEMO_TTL_MS;
  st->fence_ttl_ms = FP_STORE_DEFAULT_FENCE_TTL_MS;
  return FP_OK;
}

void fp_store_destroy(fp_store_t *st) {
  if (!st) return;
  free(st->prefix);
  free(st->argv);
  free(st->argvlen);
  free(st->numoff);
  free(st->nums);
  st->be->destroy(st);
}

uint64_t fp_store_roundtrips(const fp_store_t *st) { return st ? st->roundtrips : 0; }
uint64_t fp_store_memo_misses(const fp_store_t *st) { return st ? st->memo_misses : 0; }
uint64_t fp_store_too_late(const fp_store_t *st) { return st ? st->too_late : 0; }

void fp_store_set_loss_check(fp_store_t *st, int on) {
  if (st) st->loss_check = on ? 1 : 0;
}

void fp_store_set_lateness(fp_store_t *st, int64_t lateness_ms) {
  if (st && lateness_ms >= 0) st->lateness_ms = lateness_ms;
}

/* ---------------------------------------------------------------------------------------- */
/* ARGV building                                                                             */

static fp_err_t argv_reserve(fp_store_t *st, size_t more) {
  size_t need = st->argc + more;
  if (need <= st->argcap) return FP_OK;
  size_t cap = st->argcap ? st->argcap : 64;
  while (cap < need) cap *= 2;
  const char **a = realloc(st->argv, cap * sizeof(*a));
  if (!a) return FP_ERR_NOMEM;
  st->argv = a;
  size_t *l = realloc(st->argvlen, cap * sizeof(*l));
  if (!l) return FP_ERR_NOMEM;
  st->argvlen = l;
  size_t *o = realloc(st->numoff, cap * sizeof(*o));
  if (!o) return FP_ERR_NOMEM;
  st->numoff = o;
  st->argcap = cap;
  return FP_OK;
}

static void argv_reset(fp_store_t *st) {
  st->argc = 0;
  st->numlen = 0;
}

/* Adds a borrowed string (must outlive the call). */
static fp_err_t argv_str(fp_store_t *st, const char *s, size_t len) {
  if (argv_reserve(st, 1)) return FP_ERR_NOMEM;
  st->argv[st->argc] = s;
  st->argvlen[st->argc] = len;
  st->numoff[st->argc] = (size_t)-1;
  st->argc++;
  return FP_OK;
}

static fp_err_t argv_cstr(fp_store_t *st, const char *s) { return argv_str(st, s, strlen(s)); }

/* Adds a formatted number, kept in st->nums until argv_finish. */
static fp_err_t argv_fmt(fp_store_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fp_err_t argv_fmt(fp_store_t *st, const char *fmt, ...) {
  if (argv_reserve(st, 1)) return FP_ERR_NOMEM;
  if (st->numcap - st->numlen < 32) {
    size_t cap = st->numcap ? st->numcap * 2 : 4096;
    char *p = realloc(st->nums, cap);
    if (!p) return FP_ERR_NOMEM;
    st->nums = p;
    st->numcap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(st->nums + st->numlen, st->numcap - st->numlen, fmt, ap);
  va_end(ap);
  if (w < 0 || (size_t)w >= st->numcap - st->numlen) return FP_ERR_INVALID_ARG;
  st->argv[st->argc] = NULL;
  st->numoff[st->argc] = st->numlen;
  st->argvlen[st->argc] = (size_t)w;
  st->argc++;
  st->numlen += (size_t)w + 1;
  return FP_OK;
}

static void argv_finish(fp_store_t *st) {
  for (size_t i = 0; i < st->argc; i++)
    if (st->numoff[i] != (size_t)-1) st->argv[i] = st->nums + st->numoff[i];
}

static fp_err_t eval(fp_store_t *st, fp_store_reply_t *rep, char *errstr, size_t errstr_size) {
  argv_finish(st);
  return st->be->eval(st, &fp_store_windows_script, st->argc, st->argv, st->argvlen, rep,
                      errstr, errstr_size);
}

/* ---------------------------------------------------------------------------------------- */

/* floor(a / b) for b > 0, also for negative a. */
static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && a < 0) q--;
  return q;
}

static char kind_char(fp_win_kind_t k) {
  switch (k) {
  case FP_WIN_COUNT: return 'c';
  case FP_WIN_SUM: return 's';
  case FP_WIN_DISTINCT: return 'd';
  case FP_WIN_TOPK: return 't';
  case FP_WIN_BASELINE: return 'b';
  }
  return 0;
}

static fp_err_t check_spec(const fp_win_spec_t *sp, char *errstr, size_t errstr_size) {
  if (!sp || sp->step_ms <= 0 || sp->size_ms <= 0 || sp->size_ms % sp->step_ms != 0)
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG,
                     "store: window size must be a positive multiple of a positive step");
  if (sp->size_ms / sp->step_ms > FP_STORE_MAX_BUCKETS)
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG,
                     "store: window of %lld buckets (max %d)",
                     (long long)(sp->size_ms / sp->step_ms), FP_STORE_MAX_BUCKETS);
  if (!kind_char(sp->kind))
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: unknown window kind");
  return FP_OK;
}

/* Parses "v" or "v,m,s" starting at *p; advances past the following ';'. */
static int parse_out(const char **p, const char *end, fp_win_value_t *out) {
  double x[3] = {0, 0, 0};
  const char *s = *p;
  for (int i = 0; i < 3; i++) {
    char *e;
    x[i] = strtod(s, &e);
    if (e == s || e > end) return -1;
    s = e;
    if (s < end && *s == ',') {
      s++;
      continue;
    }
    break;
  }
  if (s < end && *s != ';') return -1;
  if (s < end) s++;
  *p = s;
  out->value = x[0];
  out->mean = x[1];
  out->stddev = x[2];
  return 0;
}

static int64_t reply_i64(const fp_store_reply_t *rep, size_t i) {
  int64_t v = -1;
  if (i < rep->n && rep->str[i]) fp_parse_i64(rep->str[i], INT64_MIN, INT64_MAX, &v);
  return v;
}

fp_err_t fp_store_apply(fp_store_t *st, const char *source, fp_win_op_t *ops, size_t n,
                        int64_t committed, fp_store_result_t *res, char *errstr,
                        size_t errstr_size) {
  fp_err_t err;
  fp_store_reply_t rep = {0};

  if (res) memset(res, 0, sizeof(*res));
  if (!st || !source || !*source || (n && !ops))
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  if (n == 0) return FP_OK;
  for (size_t i = 0; i < n; i++) {
    const fp_win_op_t *op = &ops[i];
    if ((err = check_spec(op->spec, errstr, errstr_size))) return err;
    if (!op->key || op->offset < 0 || (i && op->offset < ops[i - 1].offset) || !isfinite(op->amount))
      return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG,
                       "store: op %zu: missing key, negative or descending offset, or "
                       "non-finite amount", i);
  }

  argv_reset(st);
  err = argv_cstr(st, "apply");
  if (!err) err = argv_cstr(st, st->prefix);
  if (!err) err = argv_cstr(st, source);
  if (!err) err = argv_fmt(st, "%lld", (long long)committed);
  if (!err) err = argv_fmt(st, "%lld", (long long)st->memo_ttl_ms);
  if (!err) err = argv_fmt(st, "%lld", (long long)st->fence_ttl_ms);
  if (!err) err = argv_fmt(st, "%lld", (long long)st->lateness_ms);
  if (!err) err = argv_cstr(st, st->loss_check ? "1" : "0");
  if (!err) err = argv_fmt(st, "%zu", n);
  for (size_t i = 0; i < n && !err; i++) {
    const fp_win_op_t *op = &ops[i];
    static const char kinds[][2] = {"c", "s", "d", "t", "b"};
    err = argv_fmt(st, "%lld", (long long)op->offset);
    if (!err) err = argv_str(st, kinds[op->spec->kind], 1);
    if (!err) err = argv_cstr(st, op->key);
    if (!err) err = argv_fmt(st, "%lld", (long long)(op->spec->size_ms / op->spec->step_ms));
    if (!err) err = argv_fmt(st, "%lld", (long long)op->spec->step_ms);
    if (!err) err = argv_fmt(st, "%lld", (long long)floordiv(op->ts_ms, op->spec->step_ms));
    if (!err) err = argv_fmt(st, "%.17g", op->spec->kind == FP_WIN_SUM ? op->amount : 1.0);
    if (!err) err = argv_cstr(st, op->member ? op->member : "");
  }
  if (err) return fp_seterr(errstr, errstr_size, err, "store: out of memory building a batch");

  if ((err = eval(st, &rep, errstr, errstr_size))) return err;
  if (rep.n != 5 || !rep.str[4])
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed apply reply (%zu elements)",
                     rep.n);
  const char *p = rep.str[4], *end = rep.str[4] + rep.len[4];
  for (size_t i = 0; i < n; i++) {
    if (parse_out(&p, end, &ops[i].out))
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed result for op %zu", i);
  }
  int64_t recomputed = reply_i64(&rep, 2), late = reply_i64(&rep, 3);
  if (res) {
    res->applied = (size_t)reply_i64(&rep, 0);
    res->replayed = (size_t)reply_i64(&rep, 1);
    res->recomputed = (size_t)recomputed;
    res->too_late = (size_t)late;
  }
  if (recomputed > 0) {
    st->memo_misses += (uint64_t)recomputed;
    fp_log_once(FP_LOG_WARN, "store",
                "source %s: %lld replayed offsets had no memo left (expired or pruned); their "
                "window values were recomputed read-only and may differ from the first run",
                source, (long long)recomputed);
  }
  if (late > 0) st->too_late += (uint64_t)late;
  return FP_OK;
}

fp_err_t fp_store_fence(fp_store_t *st, const char *source, int64_t *offset_out, char *errstr,
                        size_t errstr_size) {
  fp_store_reply_t rep = {0};
  fp_err_t err;

  if (!st || !source || !offset_out)
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  argv_reset(st);
  if (argv_cstr(st, "fence") || argv_cstr(st, st->prefix) || argv_cstr(st, source))
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
  if ((err = eval(st, &rep, errstr, errstr_size))) return err;
  if (rep.n != 1 || !rep.str[0] ||
      fp_parse_i64(rep.str[0], -1, INT64_MAX, offset_out) != FP_OK)
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed fence reply");
  return FP_OK;
}

typedef struct {
  const char *term;
  size_t len;
  double count;
} topk_cand_t;

static int topk_cmp(const void *a, const void *b) {
  const topk_cand_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  size_t l = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->term, y->term, l);
  if (c) return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

fp_err_t fp_store_topk(fp_store_t *st, const char *key, const fp_win_spec_t *spec, int64_t ts_ms,
                       size_t k, fp_topk_entry_t *out, size_t *n_out, char *errstr,
                       size_t errstr_size) {
  fp_store_reply_t rep = {0};
  fp_err_t err;

  if (n_out) *n_out = 0;
  if (!st || !key || !n_out || (k && !out))
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  if ((err = check_spec(spec, errstr, errstr_size))) return err;
  if (k == 0) return FP_OK;
  argv_reset(st);
  err = argv_cstr(st, "topk");
  if (!err) err = argv_cstr(st, st->prefix);
  if (!err) err = argv_cstr(st, key);
  if (!err) err = argv_fmt(st, "%lld", (long long)(spec->size_ms / spec->step_ms));
  if (!err) err = argv_fmt(st, "%lld", (long long)spec->step_ms);
  if (!err) err = argv_fmt(st, "%lld", (long long)floordiv(ts_ms, spec->step_ms));
  if (!err) err = argv_fmt(st, "%zu", k);
  if (err) return fp_seterr(errstr, errstr_size, err, "store: out of memory");
  if ((err = eval(st, &rep, errstr, errstr_size))) return err;
  if (rep.n % 2) return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk reply");

  size_t nc = rep.n / 2;
  if (nc == 0) return FP_OK;
  topk_cand_t *c = calloc(nc, sizeof(*c));
  if (!c) return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
  for (size_t i = 0; i < nc; i++) {
    c[i].term = rep.str[2 * i] ? rep.str[2 * i] : "";
    c[i].len = rep.str[2 * i] ? rep.len[2 * i] : 0;
    if (!rep.str[2 * i + 1] || fp_parse_double(rep.str[2 * i + 1], &c[i].count) != FP_OK) {
      free(c);
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk count");
    }
  }
  qsort(c, nc, sizeof(*c), topk_cmp);
  size_t m = nc < k ? nc : k;
  for (size_t i = 0; i < m; i++) {
    size_t l = c[i].len < sizeof(out[i].term) - 1 ? c[i].len : sizeof(out[i].term) - 1;
    memcpy(out[i].term, c[i].term, l);
    out[i].term[l] = '\0';
    out[i].count = c[i].count;
  }
  *n_out = m;
  free(c);
  return FP_OK;
}

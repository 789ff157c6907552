/*
 * store.c - the store's public face: argument checks, the windows script's calling
 * convention (ARGV building, reply parsing), and dispatch to a backend (store_redis.c,
 * store_mem.c) through fp_store_backend_t.
 *
 * How it works: fp_store_apply turns a batch of ops into ONE script call (mode "apply",
 * each window touched named once, each offset once, then 2 or 3 ARGV per op; bucket index
 * computed here with floor division; consecutive ops of a COUNT, BASELINE or DISTINCT
 * window on one bucket (and member) go as one run); the script (store_windows.lua) applies
 * what is above the fence, answers the rest from the memo, and returns every op's (or
 * run's) result as text ("v" or "v,sum,sumsq", ';'-separated, %.17g-exact, a run's with
 * "*k" or "@k"), which is parsed back into op->out. Numbers are formatted into one scratch buffer whose
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
#include <stddef.h>
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
  st->distinct_exact = FP_STORE_DEFAULT_DISTINCT_EXACT;
  return FP_OK;
}

void fp_store_destroy(fp_store_t *st) {
  if (!st) return;
  free(st->prefix);
  free(st->argv);
  free(st->argvlen);
  free(st->numoff);
  free(st->nums);
  free(st->wslot);
  free(st->opwin);
  free(st->perm);
  free(st->wstart);
  free(st->kidx);
  free(st->wruns);
  free(st->tid);
  free(st->tcount);
  fp_buf_free(&st->blob);
  st->be->destroy(st);
}

uint64_t fp_store_roundtrips(const fp_store_t *st) { return st ? st->roundtrips : 0; }
uint64_t fp_store_ops_in_runs(const fp_store_t *st) { return st ? st->ops_in_runs : 0; }
uint64_t fp_store_memo_misses(const fp_store_t *st) { return st ? st->memo_misses : 0; }
uint64_t fp_store_too_late(const fp_store_t *st) { return st ? st->too_late : 0; }

void fp_store_set_loss_check(fp_store_t *st, int on) {
  if (st) st->loss_check = on ? 1 : 0;
}

void fp_store_set_lateness(fp_store_t *st, int64_t lateness_ms) {
  if (st && lateness_ms >= 0) st->lateness_ms = lateness_ms;
}

void fp_store_set_distinct_exact(fp_store_t *st, int64_t members) {
  if (st && members >= 0) st->distinct_exact = members;
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

/* Room for one more number in st->nums (32 bytes, enough for any %.17g or int64). */
static fp_err_t nums_reserve(fp_store_t *st) {
  if (st->numcap - st->numlen >= 32) return FP_OK;
  size_t cap = st->numcap ? st->numcap * 2 : 4096;
  char *p = realloc(st->nums, cap);
  if (!p) return FP_ERR_NOMEM;
  st->nums = p;
  st->numcap = cap;
  return FP_OK;
}

/* Adds a formatted number, kept in st->nums until argv_finish. */
static fp_err_t argv_fmt(fp_store_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fp_err_t argv_fmt(fp_store_t *st, const char *fmt, ...) {
  if (argv_reserve(st, 1) || nums_reserve(st)) return FP_ERR_NOMEM;
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

/* Adds a decimal integer (no printf: a batch has several per mention). */
static fp_err_t argv_i64(fp_store_t *st, int64_t v) {
  if (argv_reserve(st, 1) || nums_reserve(st)) return FP_ERR_NOMEM;
  char *d = st->nums + st->numlen;
  size_t n = 0;
  if (v < 0) d[n++] = '-';
  n += fp_fmt_u64(d + n, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
  d[n] = '\0';
  st->argv[st->argc] = NULL;
  st->numoff[st->argc] = st->numlen;
  st->argvlen[st->argc] = n;
  st->argc++;
  st->numlen += n + 1;
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

/* One result of the script: the values of k ops (k > 1 for a run). */
typedef struct {
  double x[3]; /* "v" or "v,sum,sumsq" (BASELINE): of the run's last op */
  uint32_t k;  /* ops it answers */
  int inc;     /* "*k": op j of the run had x[0] - (k - 1 - j); "@k" or none: all x[0] */
} result_tok_t;

/* Parses "v", "v,s,q", either followed by "*k" or "@k", starting at *p; advances past the
 * following ';'. */
static int parse_tok(const char **p, const char *end, result_tok_t *t) {
  const char *s = *p;
  t->x[0] = t->x[1] = t->x[2] = 0;
  t->k = 1;
  t->inc = 0;
  for (int i = 0; i < 3; i++) {
    /* nearly every result is a small integer: read its digits here, strtod for the rest
     * (a fraction, an exponent, 16 digits or more) */
    const char *d = s + (s < end && *s == '-');
    uint64_t u = 0;
    const char *e = d;
    while (e < end && e - d < 16 && *e >= '0' && *e <= '9') u = u * 10 + (uint64_t)(*e++ - '0');
    if (e > d && e - d < 16 && (e == end || (*e != '.' && *e != 'e' && *e != 'E' && !(*e >= '0' && *e <= '9')))) {
      t->x[i] = d > s ? -(double)u : (double)u;
    } else {
      char *e2;
      t->x[i] = strtod(s, &e2);
      if (e2 == s || e2 > end) return -1;
      e = e2;
    }
    s = e;
    if (s < end && *s == ',') {
      s++;
      continue;
    }
    break;
  }
  if (s < end && (*s == '*' || *s == '@')) {
    char *e;
    t->inc = *s == '*';
    unsigned long k = strtoul(s + 1, &e, 10);
    if (e == s + 1 || e > end || k < 1 || k > UINT32_MAX) return -1;
    t->k = (uint32_t)k;
    s = e;
  }
  if (s < end && *s != ';') return -1;
  if (s < end) s++;
  *p = s;
  return 0;
}

/* FNV-1a: the window table's and a TOPK run's hash. */
static uint32_t key_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/*
 * Numbers strings by first use: item i (i < n) is the string at byte offset @p field of
 * ops[sent ? sent[i] : i] (its key or member); id[i] is its number, 1-based, in order of first
 * use, and *count how many there are. An open-addressing table in st->wslot.
 */
static fp_err_t first_use(fp_store_t *st, const fp_win_op_t *ops, const uint32_t *sent, size_t n,
                          size_t field, uint32_t *id, size_t *count) {
#define FU_STR(i) (*(const char *const *)((const char *)&ops[sent ? sent[i] : (i)] + field))
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  if (cap > st->wslotcap) {
    uint32_t *p = realloc(st->wslot, cap * sizeof(*p));
    if (!p) return FP_ERR_NOMEM;
    st->wslot = p;
    st->wslotcap = cap;
  }
  memset(st->wslot, 0, cap * sizeof(*st->wslot));
  uint32_t *first = st->wslot; /* slot -> first item index + 1 */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    const char *str = FU_STR(i);
    size_t h = key_hash(str) & (cap - 1);
    for (;;) {
      uint32_t f = first[h];
      if (!f) {
        first[h] = (uint32_t)i + 1;
        id[i] = (uint32_t)++w;
        break;
      }
      if (strcmp(FU_STR(f - 1), str) == 0) {
        id[i] = id[f - 1];
        break;
      }
      h = (h + 1) & (cap - 1);
    }
  }
#undef FU_STR
  *count = w;
  return FP_OK;
}

/*
 * Gives every op its window's position in the call (st->opwin[i], 1-based, in first-touch
 * order) and returns the number of windows; the first op naming a window stands for it.
 */
static fp_err_t window_table(fp_store_t *st, const fp_win_op_t *ops, size_t n, size_t *nwin) {
  if (n > st->opwincap) {
    uint32_t *p = realloc(st->opwin, n * sizeof(*p));
    if (!p) return FP_ERR_NOMEM;
    st->opwin = p;
    st->opwincap = n;
  }
  return first_use(st, ops, NULL, n, offsetof(fp_win_op_t, key), st->opwin, nwin);
}

/*
 * Sets op j of a result's ops. A BASELINE result comes as "count,sum,sumsq" of the steps
 * before the op's (integers the script prints cheaply); mean and deviation are computed here,
 * with the same operations in the same order as the script used to, so the doubles are the
 * same. The counts of a run's ops (exact integers) are the last one's minus the ops after.
 */
static void tok_value(const result_tok_t *t, uint32_t j, fp_win_op_t *op) {
  op->out.value = t->inc ? t->x[0] - (double)(t->k - 1 - j) : t->x[0];
  op->out.mean = t->x[1];
  op->out.stddev = t->x[2];
  if (op->spec->kind == FP_WIN_BASELINE) {
    double n = (double)(op->spec->size_ms / op->spec->step_ms);
    double sum = op->out.mean, sq = op->out.stddev;
    double var = (sq - sum * sum / n) / n;
    if (var < 0) var = 0;
    op->out.mean = sum / n;
    op->out.stddev = sqrt(var);
  }
}

static int64_t reply_i64(const fp_store_reply_t *rep, size_t i) {
  int64_t v = -1;
  if (i < rep->n && rep->str[i]) fp_parse_i64(rep->str[i], INT64_MIN, INT64_MAX, &v);
  return v;
}

/* Grows a scratch array of uint32_t to hold @p need elements. */
static fp_err_t grow_u32(uint32_t **p, size_t *cap, size_t need) {
  if (need <= *cap) return FP_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  uint32_t *q = realloc(*p, c * sizeof(*q));
  if (!q) return FP_ERR_NOMEM;
  *p = q;
  *cap = c;
  return FP_OK;
}

/* Whether two ops of one window, consecutive in sending order, go in one run: same bucket,
 * and for DISTINCT the same member (COUNT and BASELINE have none), for TOPK a term on both
 * (the run counts them). SUM never does. */
static int same_run(const fp_win_op_t *a, const fp_win_op_t *b) {
  fp_win_kind_t k = a->spec->kind;
  if (k == FP_WIN_SUM) return 0;
  if (floordiv(a->ts_ms, a->spec->step_ms) != floordiv(b->ts_ms, b->spec->step_ms)) return 0;
  if (k == FP_WIN_TOPK) /* any terms, none missing: the run's value goes up by one an op */
    return a->member && *a->member && b->member && *b->member;
  if (k != FP_WIN_DISTINCT) return 1;
  const char *x = a->member ? a->member : "", *y = b->member ? b->member : "";
  return x[0] == y[0] && strcmp(x, y) == 0; /* members mostly differ at once */
}

/*
 * A TOPK run's ops sent[0..k) (st->perm order) as "nterms, term, count, ...": each term
 * once, in order of first use, with how many of the run's ops name it.
 */
static fp_err_t topk_run_terms(fp_store_t *st, const fp_win_op_t *ops, const uint32_t *sent,
                               size_t k) {
  size_t nt = 0;
  fp_err_t err;
  if ((err = grow_u32(&st->tid, &st->tidcap, k)) || (err = grow_u32(&st->tcount, &st->tcountcap, k)) ||
      (err = first_use(st, ops, sent, k, offsetof(fp_win_op_t, member), st->tid, &nt)))
    return err;
  memset(st->tcount, 0, nt * sizeof(*st->tcount));
  for (size_t r = 0; r < k; r++) st->tcount[st->tid[r] - 1]++;
  err = argv_i64(st, (int64_t)nt);
  for (size_t r = 0, done = 0; r < k && !err; r++) {
    if (st->tid[r] <= done) continue; /* the term's first op names it */
    err = argv_cstr(st, ops[sent[r]].member);
    if (!err) err = argv_i64(st, st->tcount[done++]);
  }
  return err;
}

/*
 * Runs one "apply" or "peek" call for ops[0..n) (ascending offsets). Ops are sent window by
 * window (stable within a window: a window's ops keep their order, and no op reads another
 * window), so the script names each window once; st->perm[j] is the op sent j-th, and the
 * reply's results come in that order. The memo index sent along says, for every op in
 * sending order, its offset (relative to the first) and its position among its offset's
 * ops: "d.k,d.k,...". On return *rep borrows from the backend until its next call. With
 * @p rep NULL the call is only sent (the backend's send; st->perm stays for its reply).
 */
static fp_err_t call_ops(fp_store_t *st, const char *mode, const char *source, const fp_win_op_t *ops,
                         size_t n, int64_t committed, fp_store_reply_t *rep, char *errstr,
                         size_t errstr_size) {
  fp_err_t err;
  size_t nwin = 0;
  st->call_in_runs = 0;
  if ((err = window_table(st, ops, n, &nwin)) || (err = grow_u32(&st->perm, &st->permcap, n)) ||
      (err = grow_u32(&st->wstart, &st->wstartcap, nwin + 2)) ||
      (err = grow_u32(&st->wruns, &st->wrunscap, nwin + 1)))
    return fp_seterr(errstr, errstr_size, err, "store: out of memory building a batch");
  /* counting sort by window position, stable */
  memset(st->wstart, 0, (nwin + 2) * sizeof(*st->wstart));
  for (size_t i = 0; i < n; i++) st->wstart[st->opwin[i] + 1]++;
  for (size_t w = 1; w <= nwin + 1; w++) st->wstart[w] += st->wstart[w - 1];
  for (size_t i = 0; i < n; i++) st->perm[st->wstart[st->opwin[i]]++] = (uint32_t)i;
  /* now wstart[w] is the end of window w's ops (1-based w), wstart[w-1] its start */
  for (size_t w = 1; w <= nwin; w++) {
    size_t a = w == 1 ? 0 : st->wstart[w - 1], runs = 1;
    for (size_t j = a + 1; j < st->wstart[w]; j++) runs += !same_run(&ops[st->perm[j - 1]], &ops[st->perm[j]]);
    st->wruns[w] = (uint32_t)runs;
  }

  int64_t first = ops[0].offset, last = ops[n - 1].offset;
  fp_buf_reset(&st->blob);
  if (!strcmp(mode, "apply")) {
    /* k of each op: its position among its offset's ops */
    if ((err = grow_u32(&st->kidx, &st->kidxcap, n)))
      return fp_seterr(errstr, errstr_size, err, "store: out of memory building a batch");
    for (size_t i = 0; i < n; i++)
      st->kidx[i] = (i && ops[i].offset == ops[i - 1].offset) ? st->kidx[i - 1] + 1 : 0;
    for (size_t j = 0; j < n && !err; j++) {
      size_t i = st->perm[j];
      char tmp[48];
      size_t l = fp_fmt_u64(tmp, (uint64_t)(ops[i].offset - first));
      tmp[l++] = '.';
      l += fp_fmt_u64(tmp + l, st->kidx[i]);
      if (j + 1 < n) tmp[l++] = ',';
      err = fp_buf_append(&st->blob, tmp, l);
    }
    if (err) return fp_seterr(errstr, errstr_size, err, "store: out of memory building a batch");
  }

  argv_reset(st);
  err = argv_cstr(st, mode);
  if (!err) err = argv_cstr(st, st->prefix);
  if (!err) err = argv_cstr(st, source);
  if (!err) err = argv_i64(st, committed);
  if (!err) err = argv_i64(st, st->memo_ttl_ms);
  if (!err) err = argv_i64(st, st->fence_ttl_ms);
  if (!err) err = argv_i64(st, st->lateness_ms);
  if (!err) err = argv_cstr(st, st->loss_check ? "1" : "0");
  if (!err) err = argv_i64(st, (int64_t)nwin);
  if (!err) err = argv_i64(st, first);
  if (!err) err = argv_i64(st, last);
  if (!err) err = argv_str(st, st->blob.data ? st->blob.data : "", st->blob.len);
  if (!err) err = argv_i64(st, st->distinct_exact);
  static const char kinds[][2] = {"c", "s", "d", "t", "b"};
  for (size_t w = 1; w <= nwin && !err; w++) {
    const fp_win_op_t *op = &ops[st->perm[w == 1 ? 0 : st->wstart[w - 1]]];
    const fp_win_spec_t *sp = op->spec;
    size_t cnt = st->wstart[w] - (w == 1 ? 0 : st->wstart[w - 1]);
    err = argv_cstr(st, op->key);
    if (!err) err = argv_str(st, kinds[sp->kind], 1);
    if (!err) err = argv_i64(st, sp->size_ms / sp->step_ms);
    if (!err) err = argv_i64(st, sp->step_ms);
    if (!err) err = argv_i64(st, (int64_t)cnt);
    if (!err) err = argv_i64(st, (int64_t)st->wruns[w]);
  }
  for (size_t j = 0, w = 1; j < n && !err; j++) {
    const fp_win_op_t *op = &ops[st->perm[j]];
    while (j >= st->wstart[w]) w++; /* the window of the j-th op sent */
    size_t wend = st->wstart[w], cnt = wend - (w == 1 ? 0 : st->wstart[w - 1]);
    if (st->wruns[w] < cnt) { /* sent in runs: bucket, [member,] ops in the run */
      size_t k = 1;
      while (j + k < wend && same_run(op, &ops[st->perm[j + k]])) k++;
      err = argv_i64(st, floordiv(op->ts_ms, op->spec->step_ms));
      if (!err && op->spec->kind == FP_WIN_DISTINCT) err = argv_cstr(st, op->member ? op->member : "");
      if (!err) err = argv_i64(st, (int64_t)k);
      if (!err && op->spec->kind == FP_WIN_TOPK) {
        if (op->member && *op->member) err = topk_run_terms(st, ops, st->perm + j, k);
        else err = argv_i64(st, 0); /* an op without a term: counts nothing */
      }
      if (k > 1) st->call_in_runs += k;
      j += k - 1;
      continue;
    }
    err = argv_i64(st, floordiv(op->ts_ms, op->spec->step_ms));
    if (err) break;
    switch (op->spec->kind) {
    case FP_WIN_SUM:
      if (op->amount == (double)(int64_t)op->amount && fabs(op->amount) < 1e15)
        err = argv_i64(st, (int64_t)op->amount);
      else
        err = argv_fmt(st, "%.17g", op->amount);
      break;
    case FP_WIN_DISTINCT:
    case FP_WIN_TOPK:
      err = argv_cstr(st, op->member ? op->member : "");
      break;
    default:
      break;
    }
  }
  if (err) return fp_seterr(errstr, errstr_size, err, "store: out of memory building a batch");
  if (!rep) { /* fp_store_apply_send: the reply is fp_store_apply's to read */
    argv_finish(st);
    return st->be->send(st, &fp_store_windows_script, st->argc, st->argv, st->argvlen, errstr,
                        errstr_size);
  }
  return eval(st, rep, errstr, errstr_size);
}

/* Parses an "A" or "P" reply's results (in sending order; one per op or run) into the ops' out. */
static fp_err_t parse_results(fp_store_t *st, const fp_store_reply_t *rep, fp_win_op_t *ops,
                              size_t n, char *errstr, size_t errstr_size) {
  if (rep->n != 3 || !rep->str[2])
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed reply (%zu elements)",
                     rep->n);
  const char *p = rep->str[2], *end = rep->str[2] + rep->len[2];
  for (size_t j = 0; j < n;) {
    result_tok_t t;
    if (parse_tok(&p, end, &t) || t.k > n - j)
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed result for op %zu", j);
    for (uint32_t r = 0; r < t.k; r++) tok_value(&t, r, &ops[st->perm[j + r]]);
    j += t.k;
  }
  return FP_OK;
}

typedef struct {
  int64_t offset;
  uint32_t k;
  uint32_t r;       /* which of tok's ops */
  result_tok_t tok; /* the result (of a run, for r > 0 or tok.k > 1) */
} memo_entry_t;

static int memo_cmp(const void *a, const void *b) {
  const memo_entry_t *x = a, *y = b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  return (x->k > y->k) - (x->k < y->k);
}

/* Reads the memo records of an "R" reply: "first-last" -> "d.k,...|r;r;...". */
static fp_err_t memo_entries(const fp_store_reply_t *rep, memo_entry_t **out, size_t *nout) {
  size_t cap = 0, n = 0;
  memo_entry_t *e = NULL;
  for (size_t r = 2; r + 1 < rep->n; r += 2) {
    if (!rep->str[r] || !rep->str[r + 1]) continue;
    int64_t first;
    char *dash;
    first = strtoll(rep->str[r], &dash, 10);
    if (dash == rep->str[r] || *dash != '-') continue; /* not a record */
    const char *v = rep->str[r + 1], *vend = v + rep->len[r + 1];
    const char *bar = memchr(v, '|', (size_t)(vend - v));
    if (!bar) continue;
    const char *ip = v, *rp = bar + 1;
    result_tok_t tok = {{0, 0, 0}, 0, 0};
    uint32_t used = 0; /* index entries already paired with tok */
    while (ip < bar) {
      char *q;
      long long d = strtoll(ip, &q, 10);
      if (q == ip || *q != '.') break;
      unsigned long k = strtoul(q + 1, &q, 10);
      ip = q < bar && *q == ',' ? q + 1 : bar;
      if (used == tok.k) { /* the next result; a run's answers its next tok.k entries */
        if (rp >= vend || parse_tok(&rp, vend, &tok)) break;
        used = 0;
      }
      if (n == cap) {
        cap = cap ? cap * 2 : 256;
        memo_entry_t *ne = realloc(e, cap * sizeof(*e));
        if (!ne) {
          free(e);
          return FP_ERR_NOMEM;
        }
        e = ne;
      }
      e[n++] = (memo_entry_t){first + d, (uint32_t)k, used++, tok};
    }
  }
  if (n) qsort(e, n, sizeof(*e), memo_cmp);
  *out = e;
  *nout = n;
  return FP_OK;
}

/*
 * The replay path: ops[0..s) are at or below the fence. Their values come from the memo
 * records in @p rep; those without one (the memo expired or was pruned) are recomputed
 * read-only with a "peek" call. Counts replayed and recomputed offsets into @p res.
 */
static fp_err_t replay(fp_store_t *st, const char *source, fp_win_op_t *ops, size_t s,
                       const fp_store_reply_t *rep, fp_store_result_t *res, char *errstr,
                       size_t errstr_size) {
  memo_entry_t *e = NULL;
  size_t ne = 0, nmiss = 0;
  fp_win_op_t *miss = NULL;
  size_t *missidx = NULL;
  fp_err_t err = FP_OK;
  if (memo_entries(rep, &e, &ne)) return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
  if (!(miss = malloc(s * sizeof(*miss))) || !(missidx = malloc(s * sizeof(*missidx)))) {
    err = fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
    goto done;
  }
  uint32_t k = 0;
  int64_t last_missed = -1;
  for (size_t i = 0; i < s; i++) {
    k = (i && ops[i].offset == ops[i - 1].offset) ? k + 1 : 0;
    if (k == 0) res->replayed++;
    memo_entry_t key = {ops[i].offset, k, 0, {{0, 0, 0}, 0, 0}};
    memo_entry_t *hit = ne ? bsearch(&key, e, ne, sizeof(*e), memo_cmp) : NULL;
    if (hit) {
      tok_value(&hit->tok, hit->r, &ops[i]);
      continue;
    }
    if (ops[i].offset != last_missed) res->recomputed++;
    last_missed = ops[i].offset;
    missidx[nmiss] = i;
    miss[nmiss++] = ops[i];
  }
  if (nmiss) {
    fp_store_reply_t prep = {0};
    if ((err = call_ops(st, "peek", source, miss, nmiss, -1, &prep, errstr, errstr_size)) ||
        (err = parse_results(st, &prep, miss, nmiss, errstr, errstr_size)))
      goto done;
    for (size_t j = 0; j < nmiss; j++) ops[missidx[j]].out = miss[j].out;
  }
done:
  free(e);
  free(miss);
  free(missidx);
  return err;
}

/* The ops of an apply call are well-formed: known window specs, a key, ascending offsets. */
static fp_err_t check_ops(const fp_win_op_t *ops, size_t n, char *errstr, size_t errstr_size) {
  fp_err_t err;
  for (size_t i = 0; i < n; i++) {
    const fp_win_op_t *op = &ops[i];
    if ((err = check_spec(op->spec, errstr, errstr_size))) return err;
    if (!op->key || op->offset < 0 || (i && op->offset < ops[i - 1].offset) || !isfinite(op->amount))
      return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG,
                       "store: op %zu: missing key, negative or descending offset, or "
                       "non-finite amount", i);
  }
  return FP_OK;
}

void fp_store_apply_send(fp_store_t *st, const char *source, const fp_win_op_t *ops, size_t n,
                         int64_t committed) {
  char errstr[256];
  if (!st) return;
  st->sent.ops = NULL;
  if (!st->be->send || !source || !*source || !ops || n == 0 ||
      strlen(source) >= sizeof(st->sent.source) || check_ops(ops, n, errstr, sizeof(errstr)))
    return; /* fp_store_apply does it all, and reports what is wrong */
  if (call_ops(st, "apply", source, ops, n, committed, NULL, errstr, sizeof(errstr)) != FP_OK)
    return; /* not sent, or the connection was dropped: fp_store_apply sends again */
  st->sent.ops = ops;
  st->sent.n = n;
  st->sent.committed = committed;
  memcpy(st->sent.source, source, strlen(source) + 1);
}

fp_err_t fp_store_apply(fp_store_t *st, const char *source, fp_win_op_t *ops, size_t n,
                        int64_t committed, fp_store_result_t *res, char *errstr,
                        size_t errstr_size) {
  fp_err_t err;
  fp_store_result_t r = {0};

  if (res) memset(res, 0, sizeof(*res));
  if (!st || !source || !*source || (n && !ops))
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  /* this very call sent ahead? (cleared either way: any call settles what was sent) */
  int ahead = st->sent.ops && st->sent.ops == ops && st->sent.n == n &&
              st->sent.committed == committed && strcmp(st->sent.source, source) == 0;
  st->sent.ops = NULL;
  if (n == 0) return FP_OK;
  if (!ahead && (err = check_ops(ops, n, errstr, errstr_size))) return err; /* else checked */

  /* A replay answers what it can and sends the rest again; the fence only moves up, so
     this ends (the bound is for a store that keeps answering nonsense). */
  for (int round = 0; n > 0; round++) {
    fp_store_reply_t rep = {0};
    if (round == 8)
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: source %s: fence keeps moving", source);
    err = FP_ERR_INVALID_ARG;
    if (round == 0 && ahead) err = st->be->recv(st, &rep, errstr, errstr_size);
    if (err == FP_ERR_INVALID_ARG) /* not sent ahead, or its reply was read by another call */
      err = call_ops(st, "apply", source, ops, n, committed, &rep, errstr, errstr_size);
    if (err) return err;
    if (rep.n >= 2 && rep.str[0] && rep.len[0] == 1 && rep.str[0][0] == 'A') {
      if ((err = parse_results(st, &rep, ops, n, errstr, errstr_size))) return err;
      st->ops_in_runs += st->call_in_runs; /* once, also when it was sent ahead */
      int64_t late = reply_i64(&rep, 1);
      if (late > 0) r.too_late += (size_t)late;
      for (size_t i = 0; i < n; i++)
        if (i == 0 || ops[i].offset != ops[i - 1].offset) r.applied++;
      break;
    }
    if (rep.n < 2 || !rep.str[0] || rep.len[0] != 1 || rep.str[0][0] != 'R')
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed apply reply (%zu elements)",
                       rep.n);
    int64_t fence = reply_i64(&rep, 1);
    size_t s = 0;
    while (s < n && ops[s].offset <= fence) s++;
    if (s == 0)
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: replay reply without a replayed offset");
    if ((err = replay(st, source, ops, s, &rep, &r, errstr, errstr_size))) return err;
    ops += s;
    n -= s;
  }
  if (r.recomputed > 0) {
    st->memo_misses += (uint64_t)r.recomputed;
    fp_log_once(FP_LOG_WARN, "store",
                "source %s: %zu replayed offsets had no memo left (expired or pruned); their "
                "window values were recomputed read-only and may differ from the first run",
                source, r.recomputed);
  }
  if (r.too_late > 0) st->too_late += (uint64_t)r.too_late;
  if (res) *res = r;
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

/* Sorts one window's candidates, rep.str[*pos ..] (c pairs), into its request's out. */
static fp_err_t take_topk(const fp_store_reply_t *rep, size_t *pos, size_t c, fp_topk_req_t *q,
                          topk_cand_t *cand, char *errstr, size_t errstr_size) {
  if (*pos + 2 * c > rep->n) return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk reply");
  for (size_t i = 0; i < c; i++, *pos += 2) {
    cand[i].term = rep->str[*pos] ? rep->str[*pos] : "";
    cand[i].len = rep->str[*pos] ? rep->len[*pos] : 0;
    if (!rep->str[*pos + 1] || fp_parse_double(rep->str[*pos + 1], &cand[i].count) != FP_OK)
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk count");
  }
  if (c > 1) qsort(cand, c, sizeof(*cand), topk_cmp); /* c 0: cand may be NULL */
  size_t m = c < q->k ? c : q->k;
  for (size_t i = 0; i < m; i++) {
    size_t l = cand[i].len < sizeof(q->out[i].term) - 1 ? cand[i].len : sizeof(q->out[i].term) - 1;
    memcpy(q->out[i].term, cand[i].term, l);
    q->out[i].term[l] = '\0';
    q->out[i].count = cand[i].count;
  }
  q->n_out = m;
  return FP_OK;
}

fp_err_t fp_store_topk_many(fp_store_t *st, fp_topk_req_t *reqs, size_t n, char *errstr,
                            size_t errstr_size) {
  fp_store_reply_t rep = {0};
  fp_err_t err;
  size_t pos = 0, asked = 0;

  if (!st || (n && !reqs)) return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  for (size_t i = 0; i < n; i++) {
    reqs[i].n_out = 0;
    if (!reqs[i].k) continue; /* nothing to read: key and spec may be NULL */
    if (!reqs[i].key || !reqs[i].out)
      return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
    if ((err = check_spec(reqs[i].spec, errstr, errstr_size))) return err;
    asked++;
  }
  if (asked == 0) return FP_OK;
  argv_reset(st);
  err = argv_cstr(st, "topk");
  if (!err) err = argv_cstr(st, st->prefix);
  if (!err) err = argv_fmt(st, "%zu", asked);
  for (size_t i = 0; i < n && !err; i++) {
    const fp_topk_req_t *q = &reqs[i];
    if (!q->k) continue;
    err = argv_cstr(st, q->key);
    if (!err) err = argv_fmt(st, "%lld", (long long)(q->spec->size_ms / q->spec->step_ms));
    if (!err) err = argv_fmt(st, "%lld", (long long)q->spec->step_ms);
    if (!err) err = argv_fmt(st, "%lld", (long long)floordiv(q->ts_ms, q->spec->step_ms));
    if (!err) err = argv_fmt(st, "%zu", q->k);
  }
  if (err) return fp_seterr(errstr, errstr_size, err, "store: out of memory");
  if ((err = eval(st, &rep, errstr, errstr_size))) return err;

  topk_cand_t *cand = NULL;
  size_t capc = 0;
  for (size_t i = 0; i < n && !err; i++) {
    int64_t c;
    if (!reqs[i].k) continue;
    if (pos >= rep.n || !rep.str[pos] || fp_parse_i64(rep.str[pos], 0, (int64_t)rep.n, &c) != FP_OK) {
      err = fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk reply");
      break;
    }
    pos++;
    if ((size_t)c > capc) {
      topk_cand_t *nc = realloc(cand, (size_t)c * sizeof(*cand));
      if (!nc) {
        err = fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
        break;
      }
      cand = nc;
      capc = (size_t)c;
    }
    err = take_topk(&rep, &pos, (size_t)c, &reqs[i], cand, errstr, errstr_size);
  }
  free(cand);
  if (!err && pos != rep.n) err = fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: malformed topk reply");
  if (err)
    for (size_t i = 0; i < n; i++) reqs[i].n_out = 0;
  return err;
}

fp_err_t fp_store_topk(fp_store_t *st, const char *key, const fp_win_spec_t *spec, int64_t ts_ms,
                       size_t k, fp_topk_entry_t *out, size_t *n_out, char *errstr,
                       size_t errstr_size) {
  fp_topk_req_t q = {key, spec, ts_ms, k, out, 0};
  fp_err_t err;
  if (n_out) *n_out = 0;
  if (!st || !key || !n_out || (k && !out))
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: bad arguments");
  if ((err = check_spec(spec, errstr, errstr_size))) return err;
  err = fp_store_topk_many(st, &q, 1, errstr, errstr_size);
  *n_out = q.n_out;
  return err;
}

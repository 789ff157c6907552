/*
 * test_store_redis.c - the Redis store against a real redis-server (redis tier): random
 * event-time streams vs the reference model (../unit/store_ref.h), fence and memo on
 * overlapping batches, top-k, TTL on every key, memo pruning, NOSCRIPT, a killed and
 * restarted server, fatal errors (NOAUTH, OOM), and identical results from the in-process
 * store for the same ops. One case talks to a scripted stand-in instead: a connection cut
 * or stalled at each command of the handshake (see test_connect_cut).
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/store_ref.h"
#include "store.h"
#include "testlib.h"
#include "util.h"

#define LATENESS_MS 180000

static char prefix[64];

static fp_store_t *new_redis_pw(const char *case_name, const char *password, char *err,
                                size_t errsize) {
  snprintf(prefix, sizeof(prefix), "fpt%d-%s", (int)getpid(), case_name);
  fp_store_redis_conf_t conf = {.host = fpt_redis_host(), .port = fpt_redis_port(),
                                .password = password, .prefix = prefix,
                                .connect_timeout_ms = 1000, .command_timeout_ms = 5000,
                                .memo_ttl_ms = 3600000, .lateness_ms = LATENESS_MS};
  if (!conf.host || conf.port <= 0) return NULL;
  return fp_store_redis_new(&conf, err, errsize);
}

static fp_store_t *new_redis(const char *case_name) {
  char err[256];
  fp_store_t *st = new_redis_pw(case_name, NULL, err, sizeof(err));
  FPT_CHECK(st != NULL, "fp_store_redis_new: %s", err);
  return st;
}

static fp_store_t *new_mem(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  FPT_CHECK(st != NULL, "fp_store_mem_new: %s", err);
  if (st) fp_store_set_lateness(st, LATENESS_MS);
  return st;
}

/* Every key under the current prefix has a TTL; @returns how many keys were seen. */
static size_t check_ttls(redisContext *c) {
  char pattern[80];
  snprintf(pattern, sizeof(pattern), "%s:*", prefix);
  size_t n = 0, nottl = 0;
  char cursor[32] = "0";
  do {
    redisReply *r = fpt_redis_cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
    if (!FPT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "SCAN")) {
      if (r) freeReplyObject(r);
      return n;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      const char *k = r->element[1]->element[i]->str;
      redisReply *t = fpt_redis_cmd(c, "PTTL %s", k);
      n++;
      if (!t || t->type != REDIS_REPLY_INTEGER || t->integer <= 0) {
        if (nottl++ < 5) FPT_CHECK(0, "key %s has no TTL (%lld)", k, t ? t->integer : -99);
      }
      if (t) freeReplyObject(t);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  FPT_CHECK(nottl == 0, "%zu of %zu keys without TTL", nottl, n);
  return n;
}

/* @p exact: the store's distinct_exact, -1 for the default (5000: more than the stream's
 * 1000 members, so every DISTINCT window stays exact) */
static void run_seed(uint64_t seed, int64_t t0, int dense, int exact) {
  ref_t r;
  ref_stream_t s;
  char name[48];
  snprintf(name, sizeof(name), "seed%llu%s%s%d", (unsigned long long)seed, dense ? "d" : "",
           exact < 0 ? "" : "x", exact);
  fp_store_t *st = new_redis(name), *mem = new_mem();
  redisContext *c = fpt_redis_connect();
  if (!st || !mem || !c) goto out;
  if (exact >= 0) fp_store_set_distinct_exact(st, exact);
  ref_stream_build(&r, &s, seed, 2000, t0, LATENESS_MS, "r", dense);
  fp_win_value_t *got = calloc(s.n, sizeof(*got)), *gotm = calloc(s.n, sizeof(*gotm));
  uint64_t rt0 = fp_store_roundtrips(st);
  ref_drive(st, "mentions:3", &s, &r, seed, 300, 1, got);
  fpt_note("seed %llu: %zu ops, %llu round trips, %zu too late, %llu ops in runs",
           (unsigned long long)seed, s.n, (unsigned long long)(fp_store_roundtrips(st) - rt0),
           r.too_late, (unsigned long long)fp_store_ops_in_runs(st));
  if (dense)
    FPT_CHECK(fp_store_ops_in_runs(st) > s.n / 3, "most ops went in runs (%llu of %zu)",
              (unsigned long long)fp_store_ops_in_runs(st), s.n);
  ref_check_topk(st, &r, s.last_ts);
  /* the in-process store, same ops, same batches: identical outs (DISTINCT: HLL vs exact) */
  ref_drive(mem, "mentions:3", &s, &r, seed, 300, 0, gotm);
  size_t differ = 0;
  for (size_t i = 0; i < s.n; i++) {
    int d = s.ops[i].spec->kind == FP_WIN_DISTINCT
                ? !ref_same(FP_WIN_DISTINCT, &got[i], &gotm[i], 1)
                : memcmp(&got[i], &gotm[i], sizeof(got[i])) != 0;
    if (d && differ++ < 5)
      FPT_CHECK(0, "op %zu: redis %.17g/%.17g/%.17g mem %.17g/%.17g/%.17g", i, got[i].value,
                got[i].mean, got[i].stddev, gotm[i].value, gotm[i].mean, gotm[i].stddev);
  }
  FPT_CHECK(differ == 0, "%zu ops differ between redis and mem", differ);
  /* exact mode: a DISTINCT op at its window's head has the exact count, not an estimate */
  size_t head = 0, inexact = 0;
  for (size_t i = 0; i < s.n && exact < 0; i++) {
    if (s.ops[i].spec->kind != FP_WIN_DISTINCT || !s.at_head[i]) continue;
    head++;
    if (got[i].value != s.expect[i].value && inexact++ < 5)
      FPT_CHECK(0, "op %zu at the head: redis %.17g, exact %.17g", i, got[i].value, s.expect[i].value);
  }
  if (exact < 0) {
    FPT_CHECK(head > 20, "DISTINCT ops at the head: %zu", head);
    FPT_CHECK(inexact == 0, "%zu of %zu DISTINCT ops at the head not exact", inexact, head);
  }  size_t nkeys = check_ttls(c);
  FPT_CHECK(nkeys > 0, "keys found under %s", prefix);
  /* memo pruning: only the last batches' offsets (committed trails by one batch) remain */
  char mk[128];
  snprintf(mk, sizeof(mk), "%s:memo:mentions:3", prefix);
  redisReply *h = fpt_redis_cmd(c, "HLEN %s", mk);
  FPT_CHECK(h && h->type == REDIS_REPLY_INTEGER && h->integer > 0 && h->integer <= 601,
            "memo fields left: %lld", h ? h->integer : -1);
  if (h) freeReplyObject(h);
  int64_t f = 0;
  char err[256];
  FPT_CHECK(fp_store_fence(st, "mentions:3", &f, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(f, s.ops[s.n - 1].offset);
  free(got);
  free(gotm);
  ref_stream_free(&s);
  ref_free(&r);
out:
  if (c) redisFree(c);
  fp_store_destroy(st);
  fp_store_destroy(mem);
}

static void test_random_streams(void) {
  for (uint64_t seed = 11; seed <= 14; seed++) run_seed(seed, 1764000000000LL + (int64_t)seed * 104729, 0, -1);
  run_seed(15, -2 * 3600000LL, 0, -1);
  /* HyperLogLog only (distinct_exact 0), and windows that pass a small cap and go over to
   * HyperLogLog mode part-way */
  run_seed(16, 1764000000000LL + 16 * 104729, 0, 0);
  run_seed(17, 1764000000000LL + 17 * 104729, 0, 12);
  /* high rate: most ops go as runs (same bucket, same member), late ones too */
  for (uint64_t seed = 21; seed <= 23; seed++) run_seed(seed, 1764000000000LL + (int64_t)seed * 7919, 1, -1);
  run_seed(24, 1764000000000LL + 24 * 7919, 1, 2);
}

static const fp_win_spec_t count_10m = {FP_WIN_COUNT, 600000, 60000};

/* fp_store_apply_send: a batch sent ahead and taken by fp_store_apply gets the values of a
 * plain apply in one round trip; a send whose reply another call read first (a fence read,
 * an apply of other ops, a second send) was still applied, and the apply that follows finds
 * its offsets behind the fence and answers them from the memo, with the same values. */
static void test_send_ahead(void) {
  ref_t r;
  ref_stream_t s;
  char err[256];
  fp_store_t *plain = new_redis("ahead-plain");
  fp_store_t *st = new_redis("ahead");
  if (!plain || !st) goto out;
  ref_stream_build(&r, &s, 41, 1500, 1764000000000LL, LATENESS_MS, "a", 1);
  fp_win_value_t *want = calloc(s.n, sizeof(*want));
  fp_win_op_t *tmp = calloc(s.n, sizeof(*tmp)), *copy = calloc(s.n, sizeof(*copy));
  size_t nbatch = 0, nfast = 0, bad = 0;
  uint64_t inruns = 0;
  for (size_t i = 0, prev = 0; i < s.n; nbatch++) {
    size_t end = i;
    for (size_t k = 0; k < 120 && end < s.n; k++) end = ref_next_offset(&s, end);
    int64_t committed = s.ops[prev].offset;
    fp_store_result_t res;
    memcpy(tmp, s.ops + i, (end - i) * sizeof(*tmp));
    uint64_t runs_plain = fp_store_ops_in_runs(plain), runs = fp_store_ops_in_runs(st);
    if (!FPT_CHECK(fp_store_apply(plain, "in:5", tmp, end - i, committed, &res, err, sizeof(err)) == FP_OK,
                   "plain: %s", err))
      break;
    for (size_t k = i; k < end; k++) want[k] = tmp[k - i].out;

    memcpy(tmp, s.ops + i, (end - i) * sizeof(*tmp));
    memcpy(copy, tmp, (end - i) * sizeof(*tmp));
    uint64_t rt = fp_store_roundtrips(st);
    int64_t fence = 0;
    size_t how = nbatch % 4;
    fp_store_apply_send(st, "in:5", tmp, end - i, committed);
    if (how == 1) /* another call reads the reply first */
      FPT_CHECK(fp_store_fence(st, "in:5", &fence, err, sizeof(err)) == FP_OK, "fence: %s", err);
    if (how == 2) /* sent again from a copy: the first send's reply is dropped */
      fp_store_apply_send(st, "in:5", copy, end - i, committed);
    fp_err_t e = fp_store_apply(st, "in:5", tmp, end - i, how == 3 ? committed + 1 : committed, &res,
                                err, sizeof(err));
    if (!FPT_CHECK(e == FP_OK, "batch %zu (case %zu): %s", nbatch, how, err)) break;
    if (how == 0) {
      nfast++;
      FPT_CHECK_EQ_INT(fp_store_roundtrips(st) - rt, 1); /* the send was the round trip */
      FPT_CHECK_EQ_INT(res.applied, ref_count_offsets(&s, i, end));
      /* its ops in runs are counted once, as the plain apply counts them */
      FPT_CHECK_EQ_INT(fp_store_ops_in_runs(st) - runs, fp_store_ops_in_runs(plain) - runs_plain);
      inruns += fp_store_ops_in_runs(st) - runs;
    } else {
      /* what was sent ahead got applied: the apply is a replay */
      FPT_CHECK_EQ_INT(res.replayed, ref_count_offsets(&s, i, end));
      FPT_CHECK_EQ_INT(res.recomputed, 0);
      FPT_CHECK_EQ_INT(fp_store_ops_in_runs(st) - runs, 0); /* counted by no reply taken */
      if (how == 1) FPT_CHECK_EQ_INT(fence, s.ops[end - 1].offset);
    }
    for (size_t k = i; k < end; k++)
      if (memcmp(&tmp[k - i].out, &want[k], sizeof(want[k])) != 0 && bad++ < 5)
        FPT_CHECK(0, "batch %zu (case %zu) op %zu: %.17g, plain apply %.17g", nbatch, how, k,
                  tmp[k - i].out.value, want[k].value);
    prev = i;
    i = end;
  }
  FPT_CHECK(nbatch > 8 && nfast > 2, "%zu batches, %zu sent ahead", nbatch, nfast);
  FPT_CHECK(inruns > 0, "ops in runs among the batches sent ahead: %llu", (unsigned long long)inruns);
  FPT_CHECK(bad == 0, "%zu values differ from the plain applies", bad);
  /* a send nobody takes is applied before the store's next call: here, a fence read */
  fp_win_op_t late = {.offset = s.ops[s.n - 1].offset + 10, .key = "ahead-last", .spec = &count_10m,
                      .ts_ms = s.last_ts, .amount = 1};
  fp_store_apply_send(st, "in:5", &late, 1, 0);
  int64_t f = -1;
  FPT_CHECK(fp_store_fence(st, "in:5", &f, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(f, late.offset);
  free(want);
  free(tmp);
  free(copy);
  ref_stream_free(&s);
  ref_free(&r);
out:
  fp_store_destroy(plain);
  fp_store_destroy(st);
}

static void test_noscript(void) {
  fp_store_t *st = new_redis("noscript");
  redisContext *c = fpt_redis_connect();
  char err[256];
  if (!st || !c) goto out;
  fp_win_op_t op = {.offset = 1, .key = "k", .spec = &count_10m, .ts_ms = 5, .amount = 1};
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  redisReply *r = fpt_redis_cmd(c, "SCRIPT FLUSH");
  if (r) freeReplyObject(r);
  uint64_t rt = fp_store_roundtrips(st);
  op.offset = 2;
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "after flush: %s",
            err);
  FPT_CHECK_NEAR(op.out.value, 2, 0);
  FPT_CHECK_EQ_INT(fp_store_roundtrips(st) - rt, 3); /* NOSCRIPT, SCRIPT LOAD, EVALSHA */
  rt = fp_store_roundtrips(st);
  op.offset = 3;
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(fp_store_roundtrips(st) - rt, 1);
out:
  if (c) redisFree(c);
  fp_store_destroy(st);
}

/* Redis killed between batches: FP_ERR_REDIS, then the same batch succeeds after a restart
 * and every value is exact (appendfsync always keeps what was applied). */
static void test_kill_restart(void) {
  ref_t r;
  ref_stream_t s;
  char err[256];
  fp_store_t *st = new_redis("restart");
  if (!st) return;
  ref_stream_build(&r, &s, 77, 600, 1764000000000LL, LATENESS_MS, "k", 0);
  size_t half = 0;
  while (half < s.n && s.ops[half].offset < s.ops[0].offset + 300) half++;
  fp_win_op_t *tmp = calloc(s.n, sizeof(*tmp));
  memcpy(tmp, s.ops, s.n * sizeof(*tmp));
  fp_store_result_t res;
  FPT_CHECK(fp_store_apply(st, "in:0", tmp, half, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  if (fpt_services_cmd("kill-redis") != 0) goto out;
  fp_err_t e = fp_store_apply(st, "in:0", tmp + half, s.n - half, 0, &res, err, sizeof(err));
  FPT_CHECK(e == FP_ERR_REDIS, "apply while redis is down: %d (%s)", (int)e, err);
  e = fp_store_apply(st, "in:0", tmp + half, s.n - half, 0, &res, err, sizeof(err));
  FPT_CHECK(e == FP_ERR_REDIS, "still down: %d (%s)", (int)e, err);
  if (fpt_services_cmd("start-redis") != 0) goto out;
  e = fp_store_apply(st, "in:0", tmp + half, s.n - half, 0, &res, err, sizeof(err));
  FPT_CHECK(e == FP_OK, "after restart: %s", err);
  FPT_CHECK_EQ_INT(res.replayed, 0);
  size_t bad = 0;
  for (size_t i = 0; i < s.n; i++)
    if (!ref_same(s.ops[i].spec->kind, &tmp[i].out, &s.expect[i], 1) && bad++ < 5)
      FPT_CHECK(0, "op %zu: got %.17g want %.17g", i, tmp[i].out.value, s.expect[i].value);
  FPT_CHECK(bad == 0, "%zu ops wrong after restart", bad);
  /* and a full replay of everything is answered from the memo */
  memcpy(tmp, s.ops, s.n * sizeof(*tmp));
  FPT_CHECK(fp_store_apply(st, "in:0", tmp, s.n, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(res.applied, 0);
  FPT_CHECK_EQ_INT(res.recomputed, 0);
out:
  free(tmp);
  ref_stream_free(&s);
  ref_free(&r);
  fp_store_destroy(st);
}

static void test_fatal_errors(void) {
  char err[256];
  fp_store_t *st = new_redis("fatal");
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  if (!st || !c) goto out;
  fp_win_op_t op = {.offset = 1, .key = "k", .spec = &count_10m, .ts_ms = 5, .amount = 1};

  r = fpt_redis_cmd(c, "CONFIG SET maxmemory 1");
  if (r) freeReplyObject(r);
  fp_err_t e = fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err));
  FPT_CHECK(e == FP_ERR_REDIS_FATAL && strstr(err, "OOM"), "OOM is fatal: %d %s", (int)e, err);
  r = fpt_redis_cmd(c, "CONFIG SET maxmemory 0");
  if (r) freeReplyObject(r);
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK,
            "usable again: %s", err);

  r = fpt_redis_cmd(c, "CONFIG SET requirepass fpt-secret");
  if (r) freeReplyObject(r);
  fp_store_t *st2 = new_redis_pw("fatal", NULL, err, sizeof(err));
  FPT_CHECK(st2 == NULL && strstr(err, "NOAUTH"), "no password: %s", err);
  fp_store_destroy(st2);
  st2 = new_redis_pw("fatal", "wrong", err, sizeof(err));
  FPT_CHECK(st2 == NULL && (strstr(err, "WRONGPASS") || strstr(err, "invalid")), "wrong password: %s",
            err);
  fp_store_destroy(st2);
  st2 = new_redis_pw("fatal", "fpt-secret", err, sizeof(err));
  FPT_CHECK(st2 != NULL, "right password: %s", err);
  if (st2) {
    op.offset = 2;
    FPT_CHECK(fp_store_apply(st2, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
    FPT_CHECK_NEAR(op.out.value, 2, 0);
  }
  fp_store_destroy(st2);
  r = fpt_redis_cmd(c, "CONFIG SET requirepass %s", "");
  if (r) freeReplyObject(r);
out:
  if (c) redisFree(c);
  fp_store_destroy(st);
}

/* The key of window "e": its hash (HK), union (UK), exact set (ZK) or the HyperLogLog of
 * bucket b (BK). */
enum { HK, UK_, ZK, BK };
static const char *wkey(char *k, size_t n, int which, long long b) {
  if (which == HK) snprintf(k, n, "%s:w:e", prefix);
  else if (which == UK_) snprintf(k, n, "%s:wu:e", prefix);
  else if (which == ZK) snprintf(k, n, "%s:wz:e", prefix);
  else snprintf(k, n, "%s:wb:e:%lld", prefix, b);
  return k;
}

static long long pttl(redisContext *c, int which, long long b) {
  char k[160];
  wkey(k, sizeof(k), which, b);
  redisReply *r = fpt_redis_cmd(c, "PTTL %s", k);
  long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
  if (r) freeReplyObject(r);
  return v;
}

static void set_pttl(redisContext *c, int which, long long b, long long ms) {
  char k[160];
  wkey(k, sizeof(k), which, b);
  redisReply *r = fpt_redis_cmd(c, "PEXPIRE %s %lld", k, ms);
  if (r) freeReplyObject(r);
}

/* Expiry is set when a key is made and refreshed for all of a window's keys once half of the
 * TTL has passed (the hash's x), not on every call. @p exact: the window counts its head
 * with the exact set (ZK), else with the union HyperLogLog (UK). */
static void expiry_case(int exact) {
  static const fp_win_spec_t d10 = {FP_WIN_DISTINCT, 600000, 60000};
  const long long ttl = (10 + 2 + (LATENESS_MS + 59999) / 60000) * 60000LL, mark = ttl - 100000;
  const int UK = exact ? ZK : UK_; /* the head's key */
  char err[256];
  fp_store_t *st = new_redis(exact ? "expiryx" : "expiry");
  redisContext *c = fpt_redis_connect();
  if (!st || !c) goto out;
  fp_store_set_distinct_exact(st, exact ? 100 : 0);
  int64_t t0 = fp_now_ms() / 60000 * 60000; /* bucket b starts here */
  long long b = t0 / 60000;
  fp_win_op_t op = {.offset = 1, .key = "e", .spec = &d10, .ts_ms = t0 + 1000, .member = "a"};
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK(pttl(c, HK, 0) > ttl - 5000 && pttl(c, HK, 0) <= ttl, "hash: %lld", pttl(c, HK, 0));
  FPT_CHECK(pttl(c, BK, b) > ttl - 5000, "new bucket key: %lld", pttl(c, BK, b));
  FPT_CHECK(pttl(c, UK, 0) > ttl - 5000, "new union key: %lld", pttl(c, UK, 0));

  /* same bucket, a new member, refresh not due: nothing re-expired */
  set_pttl(c, HK, 0, mark), set_pttl(c, UK, 0, mark), set_pttl(c, BK, b, mark);
  op.offset = 2, op.member = "b";
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(op.out.value, 2, 0);
  FPT_CHECK(pttl(c, HK, 0) <= mark && pttl(c, HK, 0) > 0, "hash kept its expiry: %lld", pttl(c, HK, 0));
  FPT_CHECK(pttl(c, BK, b) <= mark && pttl(c, BK, b) > 0, "bucket kept its expiry: %lld", pttl(c, BK, b));
  FPT_CHECK(pttl(c, UK, 0) <= mark && pttl(c, UK, 0) > 0, "union kept its expiry: %lld", pttl(c, UK, 0));

  /* the next bucket: its key and the rebuilt union are new and get the TTL at once */
  op.offset = 3, op.member = "c", op.ts_ms = t0 + 61000;
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(op.out.value, 3, 0);
  FPT_CHECK(pttl(c, BK, b + 1) > ttl - 5000, "new bucket key: %lld", pttl(c, BK, b + 1));
  if (exact) /* the set is not rebuilt when the head moves: it keeps its expiry */
    FPT_CHECK(pttl(c, UK, 0) <= mark && pttl(c, UK, 0) > 0, "set kept its expiry: %lld", pttl(c, UK, 0));
  else
    FPT_CHECK(pttl(c, UK, 0) > ttl - 5000, "rebuilt union key: %lld", pttl(c, UK, 0));
  FPT_CHECK(pttl(c, exact ? UK_ : ZK, 0) == -2, "the other mode's key: %lld", pttl(c, exact ? UK_ : ZK, 0));
  FPT_CHECK(pttl(c, HK, 0) <= mark, "hash still not refreshed: %lld", pttl(c, HK, 0));

  /* half of the TTL has passed (as the hash's x says): every key of the window is refreshed,
   * the untouched bucket too */
  redisReply *r = fpt_redis_cmd(c, "HSET %s:w:e x %lld", prefix, (long long)fp_now_ms() + ttl / 2 - 10000);
  if (r) freeReplyObject(r);
  set_pttl(c, UK, 0, mark), set_pttl(c, BK, b + 1, mark);
  op.offset = 4, op.member = "d";
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(op.out.value, 4, 0);
  FPT_CHECK(pttl(c, HK, 0) > ttl - 5000, "hash refreshed: %lld", pttl(c, HK, 0));
  FPT_CHECK(pttl(c, UK, 0) > ttl - 5000, "union refreshed: %lld", pttl(c, UK, 0));
  FPT_CHECK(pttl(c, BK, b) > ttl - 5000, "untouched bucket refreshed: %lld", pttl(c, BK, b));
  FPT_CHECK(pttl(c, BK, b + 1) > ttl - 5000, "bucket refreshed: %lld", pttl(c, BK, b + 1));
  check_ttls(c);
out:
  if (c) redisFree(c);
  fp_store_destroy(st);
}

static void test_expiry_refresh(void) {
  expiry_case(0);
  expiry_case(1);
}

/* Window "e" is in exact mode (its set, z = 1, no union) or HyperLogLog mode (the union and
 * u, no set, no z). */
static void check_mode(redisContext *c, int exact) {
  redisReply *r = fpt_redis_cmd(c, "EXISTS %s:%s:e", prefix, exact ? "wz" : "wu");
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "%s key", exact ? "set" : "union");
  if (r) freeReplyObject(r);
  r = fpt_redis_cmd(c, "EXISTS %s:%s:e", prefix, exact ? "wu" : "wz");
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "no %s key", exact ? "union" : "set");
  if (r) freeReplyObject(r);
  r = fpt_redis_cmd(c, "HMGET %s:w:e z u", prefix);
  int z = r && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING;
  int u = r && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING;
  FPT_CHECK(z == exact && u == !exact, "fields: z %d u %d", z, u);
  if (r) freeReplyObject(r);
}

/* DISTINCT's modes: exact (a sorted set of the head's members) while the window has at most
 * distinct_exact members, then HyperLogLog (the union of the bucket keys), and exact again
 * once every bucket has left the window. */
static void test_distinct_modes(void) {
  static const fp_win_spec_t d10 = {FP_WIN_DISTINCT, 600000, 60000};
  char err[256], m[32];
  fp_store_t *st = new_redis("modes");
  redisContext *c = fpt_redis_connect();
  if (!st || !c) goto out;
  fp_store_set_distinct_exact(st, 20);
  int64_t t0 = 1764000000000LL / 60000 * 60000;
  fp_win_op_t ops[40];
  /* 20 members over two buckets: exact; the set holds them with their newest bucket */
  for (int i = 0; i < 20; i++) {
    snprintf(m, sizeof(m), "m%d", i % 15);
    ops[i] = (fp_win_op_t){.offset = i + 1, .key = "e", .spec = &d10,
                           .ts_ms = t0 + (i < 15 ? 1000 : 61000), .member = strdup(m)};
  }
  FPT_CHECK(fp_store_apply(st, "s", ops, 20, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(ops[14].out.value, 15, 0);
  FPT_CHECK_NEAR(ops[19].out.value, 15, 0); /* m0..m4 again, in the next bucket */
  redisReply *r = fpt_redis_cmd(c, "ZCARD %s:wz:e", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 15, "set: %lld", r ? r->integer : -1);
  if (r) freeReplyObject(r);
  r = fpt_redis_cmd(c, "ZSCORE %s:wz:e m0", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_STRING && atoll(r->str) == t0 / 60000 + 1, "m0's bucket");
  if (r) freeReplyObject(r);
  check_mode(c, 1);
  /* ten buckets on, bucket 0 leaves: m5..m14 (only there) go, m0..m4 stay */
  fp_win_op_t op = {.offset = 21, .key = "e", .spec = &d10, .ts_ms = t0 + 600000 + 1000, .member = "m0"};
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(op.out.value, 5, 0);
  /* 20 new members: past the cap, the window goes to HyperLogLog mode for good */
  for (int i = 0; i < 20; i++) {
    free((char *)ops[i].member);
    snprintf(m, sizeof(m), "n%d", i);
    ops[i] = (fp_win_op_t){.offset = 22 + i, .key = "e", .spec = &d10,
                           .ts_ms = t0 + 600000 + 2000, .member = strdup(m)};
  }
  FPT_CHECK(fp_store_apply(st, "s", ops, 20, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(ops[14].out.value, 20, 0); /* the 20th member: still exact */
  FPT_CHECK(fabs(ops[19].out.value - 25) <= 1, "HyperLogLog after the cap: %g", ops[19].out.value);
  check_mode(c, 0);
  /* ten buckets of silence: the window is empty, exact again */
  op = (fp_win_op_t){.offset = 42, .key = "e", .spec = &d10, .ts_ms = t0 + 1200000 + 3000, .member = "n0"};
  FPT_CHECK(fp_store_apply(st, "s", &op, 1, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(op.out.value, 1, 0);
  check_mode(c, 1);
  check_ttls(c);
  for (int i = 0; i < 20; i++) free((char *)ops[i].member);
out:
  if (c) redisFree(c);
  fp_store_destroy(st);
}

/* ---- a scripted server: answers the handshake's commands until command `cut`, where it
 * closes the connection (stall = 0) or stops answering until the client goes (stall = 1) */
typedef struct {
  int lfd, cut, stall, seen;
} fake_t;

/* Reads one RESP command (an array of bulk strings) into @p name (its first word, upper
 * case as sent); @returns 0, or -1 when the client closed. */
static int read_command(int fd, char *name, size_t size) {
  char buf[1 << 16];
  size_t have = 0;
  for (;;) {
    /* complete? "*N\r\n" then N of "$L\r\n" + L bytes + "\r\n" */
    const char *p = buf, *end = buf + have;
    long n = -1;
    int done = 0;
    name[0] = '\0';
    if (have && buf[0] == '*' && memchr(buf, '\n', have)) {
      n = strtol(p + 1, NULL, 10);
      p = (const char *)memchr(p, '\n', have) + 1;
      for (long i = 0; i < n; i++) {
        const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (!nl || *p != '$') break;
        long l = strtol(p + 1, NULL, 10);
        if (nl + 1 + l + 2 > end) break;
        if (i == 0) snprintf(name, size, "%.*s", (int)(l < 31 ? l : 31), nl + 1);
        p = nl + 1 + l + 2;
        if (i == n - 1) done = 1;
      }
    }
    if (done) return 0;
    if (have == sizeof(buf)) return -1; /* bigger than any command the handshake sends (the
                                           script is ~28 KB): the case fails on seen */
    ssize_t r = read(fd, buf + have, sizeof(buf) - have);
    if (r <= 0) return -1;
    have += (size_t)r;
  }
}

static void *fake_main(void *arg) {
  fake_t *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  char name[32], sha[41];
  if (fd < 0) return NULL;
  memset(sha, 'a', 40), sha[40] = '\0';
  for (int k = 0; read_command(fd, name, sizeof(name)) == 0; k++) {
    const char *rep = "-ERR fake\r\n";
    char tmp[80];
    f->seen++;
    if (k == f->cut) {
      if (f->stall)
        while (read_command(fd, name, sizeof(name)) == 0) {
        }
      break;
    }
    if (!strcmp(name, "PING")) rep = "+PONG\r\n";
    else if (!strcmp(name, "CONFIG")) rep = "*2\r\n$20\r\nhll-sparse-max-bytes\r\n$5\r\n12000\r\n";
    else if (!strcmp(name, "SCRIPT")) snprintf(tmp, sizeof(tmp), "$40\r\n%s\r\n", sha), rep = tmp;
    if (write(fd, rep, strlen(rep)) < 0) break;
  }
  close(fd);
  return NULL;
}

/* The handshake (PING, CONFIG GET, SCRIPT LOAD) cut or stalled at each of its commands:
 * the store is not made, the error says why, and nothing is freed twice (the sanitizer pass
 * checks; a reply kept for the error path once was). */
static void test_connect_cut(void) {
  for (int stall = 0; stall < 2; stall++) {
    for (int cut = 0; cut < 3; cut++) {
      fake_t f = {.cut = cut, .stall = stall};
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      socklen_t sl = sizeof(sa);
      pthread_t t;
      char err[256] = "";
      f.lfd = socket(AF_INET, SOCK_STREAM, 0);
      if (!FPT_CHECK(f.lfd >= 0 && bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                         listen(f.lfd, 1) == 0 && getsockname(f.lfd, (struct sockaddr *)&sa, &sl) == 0,
                     "listen on loopback"))
        return;
      FPT_CHECK_EQ_INT(pthread_create(&t, NULL, fake_main, &f), 0);
      fp_store_redis_conf_t conf = {.host = "127.0.0.1", .port = ntohs(sa.sin_port), .prefix = "fpt-cut",
                                    .connect_timeout_ms = 1000, .command_timeout_ms = 300};
      fp_store_t *st = fp_store_redis_new(&conf, err, sizeof(err));
      FPT_CHECK(st == NULL, "cut at command %d (stall %d): no store", cut, stall);
      FPT_CHECK(strstr(err, "127.0.0.1") && strstr(err, stall ? "timeout" : "closed"),
                "cut at command %d (stall %d): %s", cut, stall, err);
      fp_store_destroy(st);
      pthread_join(t, NULL);
      FPT_CHECK_EQ_INT(f.seen, cut + 1);
      close(f.lfd);
    }
  }
}

int main(void) {
  fpt_run("connect_cut", test_connect_cut);
  fpt_run("random_streams", test_random_streams);
  fpt_run("noscript", test_noscript);
  fpt_run("send_ahead", test_send_ahead);
  fpt_run("fatal_errors", test_fatal_errors);
  fpt_run("kill_restart", test_kill_restart);
  fpt_run("expiry_refresh", test_expiry_refresh);
  fpt_run("distinct_modes", test_distinct_modes);
  return fpt_done();
}

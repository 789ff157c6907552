/*
 * redis tier: the lifecycle in a real Redis shared by several workers. Two threads, each
 * with its own connection (as two engine instances would have), feed signals for the same
 * entity from different partitions at the same time: exactly one incident opens, and the
 * escalation happens once. Then: a replay returns the memo; the memo is pruned below the
 * committed offset.
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "../unit/incidents_fixture.h"
#include "store.h"
#include "store_lc.h"
#include "util.h"

static char prefix[64];

static fp_store_t *connect_store(void) {
  char err[256];
  fp_store_redis_conf_t rc;
  memset(&rc, 0, sizeof(rc));
  rc.host = fpt_redis_host();
  rc.port = fpt_redis_port();
  rc.prefix = prefix;
  rc.connect_timeout_ms = 2000;
  rc.command_timeout_ms = 5000;
  rc.memo_ttl_ms = 600000;
  fp_store_t *st = fp_store_redis_new(&rc, err, sizeof(err));
  FPT_CHECK(st != NULL, "connect: %s", st ? "" : err);
  return st;
}

typedef struct {
  const char *source;
  int base;
  int opened, escalated, events;
} worker_arg_t;

static void *worker(void *arg) {
  worker_arg_t *a = arg;
  fp_store_t *st = connect_store();
  fp_outvec_t out = {0};
  if (!st) return NULL;
  for (int i = 0; i < 40; i++) {
    fx_batch_t b;
    size_t replayed;
    int minute[1] = {i};
    fp_sev_t sev[1] = {i < 20 ? FP_SEV4 : FP_SEV2};
    fx_batch(&b, "shared-brand", a->base + i, 1, minute, sev);
    fp_outvec_reset(&out);
    if (fx_apply(st, a->source, &b, INT64_MIN, &out, &replayed) != FP_OK) break;
    a->opened += fx_count_status(&out, "opened");
    a->escalated += fx_count_status(&out, "escalated");
    a->events += (int)out.n;
  }
  fp_outvec_free(&out);
  fp_store_destroy(st);
  return NULL;
}

static void test_many_due(void) {
  fp_store_t *st;
  snprintf(prefix, sizeof(prefix), "incdue%d", (int)getpid()); /* no other test's incidents */
  st = connect_store();
  if (st) fx_many_due(st, "in:7", NULL);
  fp_store_destroy(st);
}

static void drop_state(const char *key) {
  redisContext *c = fpt_redis_connect();
  if (c) freeReplyObject(fpt_redis_cmd(c, "DEL %s:lc:%s", prefix, key));
  if (c) redisFree(c);
}

/* the same with the states of the 70 due earliest gone (expired): the index forgets them */
static void test_many_due_expired(void) {
  fp_store_t *st;
  redisContext *c;
  snprintf(prefix, sizeof(prefix), "incexp%d", (int)getpid());
  st = connect_store();
  if (st) fx_many_due(st, "in:7", drop_state);
  fp_store_destroy(st);
  if ((c = fpt_redis_connect())) {
    redisReply *r = fpt_redis_cmd(c, "EXISTS %s:lcz", prefix);
    FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "the index is empty at the end");
    freeReplyObject(r);
    redisFree(c);
  }
}

static void test_stuck_due(void) {
  fp_store_t *st;
  snprintf(prefix, sizeof(prefix), "incstuck%d", (int)getpid());
  st = connect_store();
  if (st) fx_stuck_due(st, "in:8");
  fp_store_destroy(st);
}

/* An index left by an older version (the hash P:lco, K -> due) still gets swept: the load
 * moves it into the sorted set P:lcz (a rolling upgrade keeps its open incidents). */
static void test_legacy_index(void) {
  fp_store_t *st;
  fp_outvec_t out = {0};
  fx_batch_t b;
  size_t replayed;
  static const int m0[] = {0}, m1[] = {45};
  static const fp_sev_t s0[] = {FP_SEV3}, s1[] = {FP_SEV_NONE};
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  snprintf(prefix, sizeof(prefix), "incold%d", (int)getpid());
  st = connect_store();
  if (!st || !c) goto out;
  fx_setup();
  fx_batch(&b, "old-brand", 10, 1, m0, s0);
  fx_apply(st, "up:0", &b, FX_T0, &out, &replayed);
  FPT_CHECK_EQ_INT(fx_count_status(&out, "opened"), 1);
  fp_outvec_reset(&out);
  r = fpt_redis_cmd(c, "PTTL %s:lcz", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0, "the index of open incidents has a TTL");
  freeReplyObject(r);
  /* as the older version left it: due at 30 min in the hash, nothing in the sorted set */
  freeReplyObject(fpt_redis_cmd(c, "DEL %s:lcz", prefix));
  freeReplyObject(fpt_redis_cmd(c, "HSET %s:lco fx.rule|old-brand %lld", prefix,
                                (long long)(FX_T0 + 30 * FX_MIN)));
  fx_batch(&b, "other", 11, 1, m1, s1);
  fx_apply(st, "up:0", &b, FX_T0 + 45 * FX_MIN, &out, &replayed);
  FPT_CHECK_EQ_INT(fx_count_status(&out, "resolved"), 1);
  r = fpt_redis_cmd(c, "EXISTS %s:lco", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0, "the old hash is gone");
  freeReplyObject(r);
out:
  fp_outvec_free(&out);
  fp_store_destroy(st);
  if (c) redisFree(c);
}

static void test_two_writers_one_incident(void) {
  pthread_t t1, t2;
  worker_arg_t a1 = {"in:0", 0, 0, 0, 0}, a2 = {"in:1", 1000, 0, 0, 0};
  fx_setup();
  /* the harness reads its env file lazily and is not thread-safe: read it here, once */
  FPT_CHECK(fpt_redis_host() != NULL && fpt_redis_port() > 0, "services known");
  pthread_create(&t1, NULL, worker, &a1);
  pthread_create(&t2, NULL, worker, &a2);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  FPT_CHECK_EQ_INT(a1.opened + a2.opened, 1);
  FPT_CHECK_EQ_INT(a1.escalated + a2.escalated, 1);
  FPT_CHECK_EQ_INT(a1.events + a2.events, 2);
}

static void test_memo_and_pruning(void) {
  fp_store_t *st = connect_store();
  fp_outvec_t out = {0}, again = {0};
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  fx_batch_t b;
  size_t replayed;
  char err[256];
  static const int minutes[] = {0, 1, 2};
  static const fp_sev_t sevs[] = {FP_SEV3, FP_SEV3, FP_SEV1};
  if (!st || !c) return;
  fx_setup();
  fx_batch(&b, "memo-brand", 7, 3, minutes, sevs);
  fx_apply(st, "memo:0", &b, INT64_MIN, &out, &replayed);
  FPT_CHECK_EQ_INT(out.n, 2);
  fx_apply(st, "memo:0", &b, INT64_MIN, &again, &replayed);
  FPT_CHECK_EQ_INT(replayed, 3);
  FPT_CHECK(again.n == out.n && again.n == 2 && !strcmp(again.recs[1].payload, out.recs[1].payload),
            "replay from the memo is byte-identical");
  r = fpt_redis_cmd(c, "HLEN %s:lcm:memo:0", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 2, "memo has offsets 7 and 9");
  freeReplyObject(r);
  /* offsets below 10 committed: the next commit prunes them */
  {
    static const int m2[] = {3};
    static const fp_sev_t s2[] = {FP_SEV1};
    fp_outvec_t more = {0};
    fx_batch(&b, "memo-brand", 10, 1, m2, s2);
    int64_t off10 = 10;
    FPT_CHECK_EQ_INT(fp_incidents_apply(st, "memo:0", &fx_params, b.s, 1, &off10, 1, 10, "incidents",
                                        INT64_MIN, fx_lookup, NULL, &more, &replayed, err, sizeof(err)),
                     FP_OK);
    fp_outvec_free(&more);
  }
  r = fpt_redis_cmd(c, "HKEYS %s:lcm:memo:0", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 0, "memo pruned below the committed offset");
  freeReplyObject(r);
  r = fpt_redis_cmd(c, "PTTL %s:lc:fx.rule|memo-brand", prefix);
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0, "lifecycle state expires");
  freeReplyObject(r);
  redisFree(c);
  fp_outvec_free(&out);
  fp_outvec_free(&again);
  fp_store_destroy(st);
}

static void test_top_terms_batched(void) {
  snprintf(prefix, sizeof(prefix), "inctop%d", (int)getpid());
  fp_store_t *st = connect_store();
  if (st) fx_top_terms_batched(st, "in:10");
  fp_store_destroy(st);
}

static void test_silence_and_top_terms(void) {
  fp_store_t *st = connect_store();
  fp_outvec_t out = {0};
  fx_batch_t b;
  size_t replayed;
  char err[256];
  static const int minutes[] = {0};
  static const fp_sev_t sevs[] = {FP_SEV3};
  fp_win_spec_t spec = {FP_WIN_TOPK, 10 * FX_MIN, FX_MIN};
  fp_win_op_t ops[4];
  fp_store_result_t res;
  static const char *const terms[] = {"recall", "recall", "fire", "recall"};
  if (!st) return;
  fx_setup();
  fx_rule.topics[FP_SEV3] = "pager";
  fx_rule.nwindows = 1;
  fx_rule.windows[0].name = "terms";
  fx_rule.windows[0].spec = spec;
  /* top terms: the window's members as of the event */
  memset(ops, 0, sizeof(ops));
  for (int i = 0; i < 4; i++) {
    ops[i].offset = i;
    ops[i].key = "fx.rule|loud-co|terms";
    ops[i].spec = &spec;
    ops[i].ts_ms = FX_T0;
    ops[i].amount = 1;
    ops[i].member = terms[i];
  }
  FPT_CHECK_EQ_INT(fp_store_apply(st, "terms:0", ops, 4, -1, &res, err, sizeof(err)), FP_OK);
  fx_batch(&b, "loud-co", 100, 1, minutes, sevs);
  fx_apply(st, "sil:0", &b, INT64_MIN, &out, &replayed);
  FPT_CHECK_EQ_INT(out.n, 1);
  if (out.n == 1) {
    FPT_CHECK_EQ_STR(out.recs[0].topic, "pager");
    FPT_CHECK(strstr(out.recs[0].payload, "\"top_terms\":[{\"count\":3.0,\"term\":\"recall\"},{\"count\":1.0,\"term\":\"fire\"}]") != NULL,
              "top terms in the event: %s", out.recs[0].payload);
    FPT_CHECK(strstr(out.recs[0].payload, "silenced") == NULL, "not silenced");
  }
  /* a silenced (rule, entity): recorded on the default topic, marked, not paged */
  FPT_CHECK_EQ_INT(fp_store_lc_silence(st, "fx.rule|quiet-co", fp_now_ms() + 3600000, "known issue", err, sizeof(err)), FP_OK);
  fp_outvec_reset(&out);
  fx_batch(&b, "quiet-co", 101, 1, minutes, sevs);
  fx_apply(st, "sil:0", &b, INT64_MIN, &out, &replayed);
  FPT_CHECK_EQ_INT(out.n, 1);
  if (out.n == 1) {
    FPT_CHECK_EQ_STR(out.recs[0].topic, "incidents");
    FPT_CHECK(strstr(out.recs[0].payload, "\"silenced\":true") != NULL, "marked silenced");
  }
  /* lifted: paged again */
  FPT_CHECK_EQ_INT(fp_store_lc_silence(st, "fx.rule|quiet-co", 0, "", err, sizeof(err)), FP_OK);
  fp_outvec_reset(&out);
  {
    static const int m2[] = {1};
    static const fp_sev_t s2[] = {FP_SEV2};
    fx_rule.topics[FP_SEV2] = "pager";
    fx_batch(&b, "quiet-co", 102, 1, m2, s2);
    fx_apply(st, "sil:0", &b, INT64_MIN, &out, &replayed);
    FPT_CHECK_EQ_INT(out.n, 1);
    if (out.n == 1) FPT_CHECK_EQ_STR(out.recs[0].topic, "pager");
  }
  fp_outvec_free(&out);
  fp_store_destroy(st);
  fx_setup();
}

int main(void) {
  snprintf(prefix, sizeof(prefix), "inc%d", (int)getpid());
  fpt_run("two writers, one incident", test_two_writers_one_incident);
  fpt_run("memo and pruning", test_memo_and_pruning);
  fpt_run("silences and top terms", test_silence_and_top_terms);
  fpt_run("many incidents due: each resolves once, earliest first", test_many_due);
  fpt_run("many due, the earliest 70 states expired", test_many_due_expired);
  fpt_run("what a sweep cannot resolve does not block the index", test_stuck_due);
  fpt_run("an older version's index of open incidents is swept", test_legacy_index);
  fpt_run("a run's incidents read their top terms in one round trip", test_top_terms_batched);
  return fpt_done();
}

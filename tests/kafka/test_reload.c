/*
 * kafka tier: rules reload under load, on a real broker and Redis, with the real binary.
 *
 * The rules directory is a scratch copy of tests/kafka/rules-reload/: count.lua (test.count,
 * the same in every version: counts every mention) and ver.lua (test.version, keyed on the
 * mention id, so each mention opens its own incident carrying rule.version). Versions are
 * deployed like an operator would: written aside, then rename(2)d over ver.lua, then SIGHUP.
 *
 *   A  4,000 mentions are produced; once some are committed, ver.lua becomes version B and
 *      the engine gets SIGHUP while the rest of A is still being consumed.
 *   C  1,000 more mentions, produced after A is committed: all must be evaluated by B.
 *   D  ver.lua becomes a file that does not compile (version C) and the engine gets SIGHUP.
 *   E  1,000 more mentions: the reload must fail with an ERROR naming ver.lua and the line,
 *      and B must keep running.
 *
 * Checked: every partition committed to its end; every mention has exactly one incident,
 * whose rule.version is 1 or 2; per partition the versions never go back (1...1 2...2 in
 * offset order: a switch happens at a batch boundary and a mention is evaluated by one rule
 * set); mentions committed before the swap carry 1, those of C and E carry 2; test.count's
 * window of each partition's brand holds exactly that partition's mentions; SIGTERM exits 0.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "testlib.h"

#define NPARTS 4
#define NA 4000
#define NC 1000
#define NE 1000
#define NTOTAL (NA + NC + NE)
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100

static char *in_topic, *out_topic, *dlq_topic, *group, *rules_dir, prefix[64];
static fpt_proc_t *proc;

static void copy_fixture(const char *name, const char *to) {
  char src[512], tmp[600], dst[600];
  size_t len;
  snprintf(src, sizeof src, "%s/tests/kafka/rules-reload/%s", FP_SOURCE_DIR, name);
  snprintf(tmp, sizeof tmp, "%s/.%s.new", rules_dir, to);
  snprintf(dst, sizeof dst, "%s/%s", rules_dir, to);
  char *text = fpt_read_file(src, &len);
  if (!FPT_CHECK(text != NULL, "read %s", src)) return;
  FILE *f = fopen(tmp, "w");
  FPT_CHECK(f && fwrite(text, 1, len, f) == len, "write %s", tmp);
  if (f) fclose(f);
  free(text);
  FPT_CHECK_EQ_INT(rename(tmp, dst), 0); /* atomic: the engine sees the old file or the new */
}

static void produce_range(int from, int to) {
  fpt_msg_t *msgs = calloc((size_t)(to - from), sizeof(*msgs));
  char **bufs = calloc((size_t)(to - from), sizeof(*bufs));
  for (int i = from; i < to; i++) {
    char *b = bufs[i - from] = malloc(256);
    snprintf(b, 256,
             "{\"id\":\"r-%d\",\"platform\":\"x\",\"brand\":\"b%d\",\"author\":{\"id\":\"u%d\",\"followers\":%d},"
             "\"text\":\"mention %d\",\"lang\":\"en\",\"created_at\":%" PRId64 "}",
             i, i % NPARTS, i % 50, i % 1000, i, T0 + (int64_t)i * STEP_MS);
    /* mention i is at offset i / NPARTS of partition i % NPARTS, and its brand is that
     * partition's own ("b<p>"): a window is fed by one partition, so partitions that run
     * minutes apart in event time never make each other's mentions "too late" */
    msgs[i - from].partition = i % NPARTS;
    msgs[i - from].key = "b";
    msgs[i - from].value = b;
    msgs[i - from].len = strlen(b);
  }
  FPT_CHECK_EQ_INT(fpt_produce(in_topic, msgs, (size_t)(to - from)), 0);
  for (int i = 0; i < to - from; i++) free(bufs[i]);
  free(bufs);
  free(msgs);
}

typedef struct {
  int64_t want[NPARTS]; /* committed offsets to reach (per partition) */
  int64_t at_least;     /* or: a total to reach (when >= 0) */
} commit_goal_t;

static int committed_reached(void *arg) {
  commit_goal_t *g = arg;
  int64_t c[NPARTS], total = 0;
  if (fpt_committed_offsets(group, in_topic, NPARTS, c) != 0) return 0;
  for (int p = 0; p < NPARTS; p++) {
    if (g->at_least < 0 && c[p] != g->want[p]) return 0;
    total += c[p] > 0 ? c[p] : 0;
  }
  return g->at_least < 0 || total >= g->at_least;
}

static int wait_all_committed(int to, int deadline_ms) {
  commit_goal_t g = {{0}, -1};
  for (int p = 0; p < NPARTS; p++) g.want[p] = (to - p + NPARTS - 1) / NPARTS;
  return fpt_wait_until(committed_reached, &g, deadline_ms);
}

static int count_in_log(const char *needle, const char *also) {
  size_t len;
  char *out = fpt_proc_output(proc, &len);
  int n = 0;
  for (char *line = out; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    if (strstr(line, needle) && (!also || strstr(line, also))) n++;
    line = nl ? nl + 1 : line + strlen(line);
  }
  free(out);
  return n;
}

typedef struct {
  const char *needle, *also;
} log_goal_t;

static int log_has(void *arg) {
  log_goal_t *g = arg;
  return count_in_log(g->needle, g->also) > 0;
}

static void check_incidents(const int64_t before_swap[NPARTS]) {
  static int version[NTOTAL];
  fpt_records_t *r = fpt_consume_all(out_topic, FPT_READ_COMMITTED, 60000);
  int distinct = 0, v1 = 0, v2 = 0, other = 0;
  FPT_CHECK(r && r->complete, "read the whole output topic");
  if (!r) return;
  memset(version, 0, sizeof version);
  for (size_t k = 0; k < r->n; k++) {
    json_t *ev = json_loadb(r->recs[k].value, r->recs[k].len, 0, NULL);
    const char *ent = json_string_value(json_object_get(ev, "entity"));
    const char *status = json_string_value(json_object_get(ev, "status"));
    int ver = (int)json_integer_value(json_object_get(json_object_get(ev, "rule"), "version"));
    const char *rid = json_string_value(json_object_get(json_object_get(ev, "rule"), "id"));
    int i = ent && !strncmp(ent, "r-", 2) ? atoi(ent + 2) : -1;
    if (!ev || !rid || strcmp(rid, "test.version") || !status || strcmp(status, "opened") || i < 0 ||
        i >= NTOTAL) {
      other++;
    } else if (version[i] == 0) {
      version[i] = ver;
      distinct++;
    } else { /* an at-least-once duplicate must be the same event */
      FPT_CHECK(version[i] == ver, "mention %d: incidents with versions %d and %d", i, version[i], ver);
    }
    json_decref(ev);
  }
  FPT_CHECK_EQ_INT(other, 0);
  FPT_CHECK_EQ_INT(distinct, NTOTAL);
  for (int p = 0; p < NPARTS; p++) {
    int last = 1, switched_at = -1;
    for (int i = p; i < NTOTAL; i += NPARTS) {
      int v = version[i];
      if (v == 1) v1++;
      else if (v == 2) v2++;
      if (!FPT_CHECK(v == 1 || v == 2, "mention %d: rule version %d", i, v)) continue;
      FPT_CHECK(v >= last, "partition %d: version went back from %d to %d at offset %d", p, last, v, i / NPARTS);
      if (v > last) switched_at = i / NPARTS;
      last = v;
      if (i / NPARTS < before_swap[p]) FPT_CHECK(v == 1, "mention %d was committed before the swap, has v%d", i, v);
      if (i >= NA) FPT_CHECK(v == 2, "mention %d came after the reload, has v%d", i, v);
    }
    fpt_note("partition %d: version 2 from offset %d (committed before the swap: %lld)", p,
             switched_at, (long long)before_swap[p]);
  }
  fpt_note("%d mentions evaluated by version 1, %d by version 2 (%zu records)", v1, v2, r->n);
  FPT_CHECK(v1 > 0 && v2 > 0, "both versions seen");
  fpt_records_free(r);
}

static void check_window(void) {
  redisContext *c = fpt_redis_connect();
  if (!c) return;
  for (int p = 0; p < NPARTS; p++) {
    long long total = 0;
    redisReply *rep = fpt_redis_cmd(c, "HGETALL %s:w:test.count|b%d|n", prefix, p);
    FPT_CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0, "window hash b%d exists", p);
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
      char *end;
      strtoll(rep->element[i]->str, &end, 10);
      if (*end) continue; /* bookkeeping fields */
      total += strtoll(rep->element[i + 1]->str, NULL, 10);
    }
    FPT_CHECK(total == NTOTAL / NPARTS, "test.count|b%d counted %lld mentions, not %d", p, total,
              NTOTAL / NPARTS);
    freeReplyObject(rep);
  }
  redisFree(c);
}

static void test_reload(void) {
  char bin[512], rules[600], set_in[256], set_out[256], set_dlq[256], set_group[256],
      set_kafka[256], set_port[64], set_prefix[96];
  int64_t before_swap[NPARTS];

  in_topic = fpt_topic_name("reload-in");
  out_topic = fpt_topic_name("reload-out");
  dlq_topic = fpt_topic_name("reload-dlq");
  group = fpt_topic_name("reload-group");
  snprintf(prefix, sizeof(prefix), "rl%d", (int)getpid());
  if (!(rules_dir = fpt_tmpdir("rules-reload"))) return;
  copy_fixture("count.lua", "count.lua");
  copy_fixture("version-a.lua", "ver.lua");
  FPT_CHECK_EQ_INT(fpt_topic_create(in_topic, NPARTS, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out_topic, 1, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(dlq_topic, 1, NULL), 0);
  produce_range(0, NA);

  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(rules, sizeof(rules), "rules.dir=%s", rules_dir);
  snprintf(set_in, sizeof(set_in), "input.topics=%s", in_topic);
  snprintf(set_out, sizeof(set_out), "output.topic=%s", out_topic);
  snprintf(set_dlq, sizeof(set_dlq), "dlq.topic=%s", dlq_topic);
  snprintf(set_group, sizeof(set_group), "group.id=%s", group);
  snprintf(set_kafka, sizeof(set_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(set_port, sizeof(set_port), "redis.port=%d", fpt_redis_port());
  snprintf(set_prefix, sizeof(set_prefix), "redis.prefix=%s", prefix);
  const char *argv[] = {bin, "run", "-s", rules, "-s", set_in, "-s", set_out, "-s", set_dlq,
                        "-s", set_group, "-s", set_kafka, "-s", set_port, "-s", set_prefix,
                        "-s", "workers=2", "-s", "batch.size=50", "-s", "commit.interval.ms=100",
                        NULL};
  proc = fpt_proc_spawn(argv, NULL, NULL);
  if (!FPT_CHECK(proc != NULL, "engine started")) return;

  /* A: swap to B while A is being consumed */
  commit_goal_t some = {{0}, NA / 5};
  FPT_CHECK(fpt_wait_until(committed_reached, &some, 120000), "some of A committed");
  FPT_CHECK_EQ_INT(fpt_committed_offsets(group, in_topic, NPARTS, before_swap), 0);
  copy_fixture("version-b.lua", "ver.lua");
  FPT_CHECK_EQ_INT(fpt_proc_signal(proc, SIGHUP), 0);
  int64_t total_before = 0;
  for (int p = 0; p < NPARTS; p++) total_before += before_swap[p] > 0 ? before_swap[p] : 0;
  fpt_note("swapped to version B with %lld of %d mentions committed", (long long)total_before, NA);
  FPT_CHECK(total_before < NA, "the swap happened while A was still flowing");
  FPT_CHECK(wait_all_committed(NA, 120000), "A committed to the end");

  /* C: everything after the reload is version B */
  produce_range(NA, NA + NC);
  FPT_CHECK(wait_all_committed(NA + NC, 120000), "C committed to the end");
  log_goal_t reloaded = {"reloaded", NULL};
  FPT_CHECK(fpt_wait_until(log_has, &reloaded, 10000), "the engine says it reloaded");

  /* D + E: a broken version keeps B running and says why, with file and line */
  copy_fixture("version-c-broken.lua", "ver.lua");
  FPT_CHECK_EQ_INT(fpt_proc_signal(proc, SIGHUP), 0);
  produce_range(NA + NC, NTOTAL);
  FPT_CHECK(wait_all_committed(NTOTAL, 120000), "E committed to the end");
  log_goal_t failed = {"reload failed", "ver.lua:4:"};
  FPT_CHECK(fpt_wait_until(log_has, &failed, 10000), "an ERROR names ver.lua:4");
  int nfail = count_in_log("reload failed", "ver.lua:4:");
  FPT_CHECK(count_in_log("ERROR", "ver.lua:4:") >= 1, "the failure is logged at ERROR");
  fpt_note("the failed reload was logged %d time(s)", nfail);

  FPT_CHECK_EQ_INT(fpt_proc_signal(proc, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(proc, 15000), 0);
  check_incidents(before_swap);
  check_window();
  if (fpt_proc_running(proc) || !wait_all_committed(NTOTAL, 1)) fpt_proc_dump_log(proc, 80);
  fpt_proc_free(proc);
  fpt_topic_delete(in_topic);
  fpt_topic_delete(out_topic);
  fpt_topic_delete(dlq_topic);
  free(in_topic), free(out_topic), free(dlq_topic), free(group), free(rules_dir);
}

int main(void) {
  fpt_run("reload under load: nothing lost, one version per mention, a broken reload keeps the old", test_reload);
  return fpt_done();
}

/*
 * faults.c: the fault suite's row table, the scenario every row runs, and the oracle.
 *
 *     faults_run [--ci] [--logdir DIR] [--seed N] ROW     run one row (FP_SERVICES_ENV set)
 *     faults_run --list [--ci]                            the row ids, one per line
 *
 * tests/faults/run.sh starts the services and runs one process per row, so that each row
 * has a fresh testlib (and, for the mock rows, its own mock cluster host). A row prints one
 * line on stdout that run.sh turns into the table:
 *
 *     FXROW<TAB>id<TAB>fault<TAB>mentions<TAB>lost<TAB>duplicates<TAB>window errors<TAB>
 *           recovery s<TAB>PASS|FAIL<TAB>notes
 *
 * The scenario (run_row): an engine consumes an input topic of FX_NPARTS partitions while
 * the suite produces the row's mentions in paced chunks (with a malformed message every
 * 1000, or a row's hostile messages). Once fault_chunk chunks are out, the fault is
 * injected, kept up (tick) and cleared after hold_ms; chunks left are then produced at
 * once. An engine that exits on its own is restarted a second later, like a supervisor
 * would (a failure unless the row allows it). Recovery time: from the fault clearing until
 * the group's committed offsets equal the end offsets of every partition. Then the engine
 * is stopped (SIGTERM, exit 0), a reference instance (own group, prefix and output topics)
 * runs over the same input without any fault, and the oracle compares:
 *
 *   lost          valid mentions missing from core.count (model - window sum, if > 0) plus
 *                 malformed messages missing from the dead-letter topic;
 *   window errors window lines (rule|entity|window bucket value) of core.count, core.alarm,
 *                 core.resolve that differ from the reference's, plus mentions counted twice;
 *   duplicates    incident records beyond the distinct event ids (byte-identical copies;
 *                 a copy with other bytes is a failure of its own, "conflicts");
 *   events        the set of event ids and their bytes equal to the reference's.
 *
 * A row passes when its testlib case passes (every FPT_CHECK held) and it recovered within
 * FX_RECOVERY_MS. Nothing else is timed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "faults.h"

/* ------------------------------------------------------------------------------------ */
/* The table                                                                             */


/* I rows: param = hostile kind; L rows: param = index into bad_rules */
static const char *const bad_rules[] = {"loop.lua", "pcall_loop.lua", "membomb.lua"};
static const char *const bad_rule_ids[] = {"bad.loop", "bad.pcall-loop", "bad.membomb"};

/*
 * Rows, field by field (fx_row_t): id, what, kind, mock, ci, n, ci_n, nchunks, pace_ms,
 * fault_chunk, hold_ms, produce_during, then may_exit, no_dups, param, ci_param, setup,
 * inject, tick, clear, extra. A hold of 600000 means "until the tick says done".
 * Mock rows: 8,000 mentions in 20 chunks 300 ms apart (the mock keeps only a few MB per
 * partition), the fault after 6 chunks. I and L rows: 6,000 mentions, 12 chunks, no fault.
 */
#define STREAM(id, what, ci, n, cin, chunks, pace, fchunk, hold, during) \
  id, what, FX_STREAM, 0, ci, n, cin, chunks, pace, fchunk, hold, during
#define MOCK(id, what, ci, hold, during) \
  id, what, FX_STREAM, 1, ci, 8000, 8000, 20, 300, 6, hold, during

static void fx_k9_check(fx_ctx_t *ctx);
/* small runs: a worker's take holds several runs of each of its partitions */
static const char *const r7_extra[] = {"batch.size=25", NULL};

static const fx_row_t rows[] = {
    /* the engine itself */
    {STREAM("E1", "engine SIGKILL at random points, restarted (x20; --ci x4)", 1, 40000, 12000, 160, 750, 2, 600000, 1),
     0, 0, 20, 4, NULL, fx_e1_inject, fx_e1_tick, NULL, NULL, NULL},
    {STREAM("E2", "engine SIGTERM and restart (x3): graceful, no duplicate", 0, 20000, 10000, 80, 250, 4, 600000, 1),
     0, 1, 3, 3, NULL, fx_e2_inject, fx_e2_tick, NULL, NULL, NULL},
    /* Redis */
    {STREAM("R1", "Redis killed (kill -9) for 5 s, restarted on its AOF", 1, 20000, 10000, 40, 250, 10, 5000, 1),
     0, 0, 0, 0, NULL, fx_r1_inject, NULL, fx_r1_clear, NULL, NULL},
    {STREAM("R2", "Redis emptied (FLUSHALL) while the engine is stopped, restart", 0, 20000, 10000, 40, 250, 15, 0, 1),
     0, 0, 0, 0, NULL, fx_r2_inject, NULL, NULL, NULL, NULL},
    {STREAM("R2b", "Redis emptied (FLUSHALL) while the engine runs", 1, 20000, 10000, 40, 250, 15, 0, 1),
     0, 0, 0, 0, NULL, fx_r2hot_inject, NULL, NULL, NULL, NULL},
    {STREAM("R3", "Redis frozen (SIGSTOP) 10 s, then SIGCONT", 1, 20000, 10000, 40, 250, 10, 10000, 1),
     0, 0, 0, 0, NULL, fx_r3_inject, NULL, fx_r3_clear, NULL, NULL},
    {STREAM("R4", "Redis slow: DEBUG SLEEP 3, three times in 10 s", 0, 20000, 10000, 40, 250, 10, 10000, 1),
     0, 0, 0, 0, NULL, NULL, fx_r4_tick, fx_r4_clear, NULL, NULL},
    {STREAM("R5", "Redis connections killed (CLIENT KILL TYPE normal) every 2 s for 10 s", 0, 20000, 10000, 40, 250, 10, 10000, 1),
     0, 0, 0, 0, NULL, NULL, fx_r5_tick, NULL, NULL, NULL},
    {STREAM("R6", "Redis OOM (maxmemory 1mb, noeviction) 5 s, then maxmemory 0", 1, 20000, 10000, 40, 250, 10, 5000, 1),
     1, 0, 0, 0, NULL, fx_r6_inject, NULL, fx_r6_clear, NULL, NULL},
    {STREAM("R7", "Redis OOM flapping: maxmemory 1mb and 0 in turn every 15 ms for 5 s", 1, 20000, 10000, 40, 250, 10, 5000, 1),
     1, 0, 0, 0, NULL, fx_r7_inject, NULL, fx_r7_clear, r7_extra, NULL},
    /* the real broker */
    {STREAM("K12", "Kafka broker killed (kill -9) 5 s, restarted", 0, 20000, 10000, 40, 250, 10, 5000, 0),
     0, 0, 0, 0, NULL, fx_k12_inject, NULL, fx_k12_clear, NULL, NULL},
    /* the mock cluster (faults_mockhost) */
    {MOCK("K1", "mock: whole cluster down 10 s under load", 1, 10000, 0),
     0, 0, 0, 0, NULL, fx_k1_inject, NULL, fx_k1_clear, NULL, NULL},
    {MOCK("K2", "mock: every broker 2 s round trip for 20 s", 0, 20000, 1),
     0, 0, 0, 0, NULL, fx_k2_inject, NULL, fx_k2_clear, NULL, NULL},
    {MOCK("K3", "mock: Produce NOT_ENOUGH_REPLICAS x5 every s for 6 s", 0, 6000, 1),
     0, 0, 0, 0, NULL, NULL, fx_k3_tick, fx_k3_clear, NULL, NULL},
    {MOCK("K4", "mock: Produce connection dropped x3 every s for 6 s", 0, 6000, 1),
     0, 0, 0, 0, NULL, NULL, fx_k4_tick, fx_k4_clear, NULL, NULL},
    {MOCK("K5", "mock: OffsetCommit REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION x5 for 6 s", 0, 6000, 1),
     0, 0, 0, 0, NULL, NULL, fx_k5_tick, fx_k5_clear, NULL, NULL},
    {MOCK("K6", "mock: Heartbeat ILLEGAL_GENERATION x5 (assignment lost), twice", 1, 6000, 1),
     0, 0, 0, 0, NULL, NULL, fx_k6_tick, fx_k6_clear, NULL, NULL},
    {MOCK("K7", "mock: group coordinator broker down 10 s", 0, 10000, 1),
     0, 0, 0, 0, fx_k7_setup, fx_k7_inject, NULL, fx_k7_clear, NULL, NULL},
    {MOCK("K8", "mock: COORDINATOR_LOAD_IN_PROGRESS on commit/join/fetch + a rejoin", 0, 6000, 1),
     0, 0, 0, 0, NULL, NULL, fx_k8_tick, fx_k8_clear, NULL, NULL},
    {MOCK("K9", "mock: output topics' broker fails Produce permanently (TOPIC_AUTHORIZATION_FAILED) for 6 s", 1, 6000, 1),
     0, 0, 0, 0, fx_k9_setup, NULL, fx_k9_tick, NULL, NULL, fx_k9_check},
    /* hostile input: param = kind (hostile.c) */
#define INPUT(id, what, ci, kind) \
  {id, what, FX_INPUT, 0, ci, 6000, 6000, 12, 100, 0, 0, 1, 0, 0, kind, kind, NULL, NULL, NULL, NULL, NULL, NULL}
    INPUT("I1", "input: truncated JSON, trailing garbage, not an object", 1, 1),
    INPUT("I2", "input: invalid UTF-8, overlong, lone surrogate", 0, 2),
    INPUT("I3", "input: \\u0000 and raw NUL bytes", 0, 3),
    INPUT("I4", "input: nesting 3000 deep", 0, 4),
    INPUT("I5", "input: 2 MiB message (> input.max.bytes)", 0, 5),
    INPUT("I6", "input: duplicate keys", 0, 6),
    INPUT("I7", "input: missing and ill-typed fields, huge numbers", 0, 7),
    INPUT("I8", "input: null value (tombstone), empty value", 0, 8),
    INPUT("I9", "input: timestamps before 2000, 2 years ahead, a day late, 1 min back", 0, 9),
    INPUT("I10", "input: the same mention twice (upstream duplicate)", 0, 10),
    /* runaway rules: param = index into bad_rules */
#define RULES(id, what, ci, idx) \
  {id, what, FX_RULES, 0, ci, 6000, 6000, 12, 100, 0, 0, 1, 0, 0, idx, idx, NULL, NULL, NULL, NULL, NULL, NULL}
    RULES("L1", "rule: while true do end, next to the counting rules", 1, 0),
    RULES("L2", "rule: pcall-wrapped infinite loop", 0, 1),
    RULES("L3", "rule: string.rep 1 GiB and unbounded table growth", 0, 2),
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                               */

static fx_ctx_t ctx_g;          /* the row being run (one per process) */
static struct {
  int64_t mentions, lost, dups, werr, recovery_ms;
  int recovered;
} res_g = {0, -1, -1, -1, -1, 0};

void fx_note(fx_ctx_t *ctx, const char *fmt, ...) {
  size_t len = strlen(ctx->note);
  va_list ap;
  if (len && len + 2 < sizeof(ctx->note)) {
    memcpy(ctx->note + len, "; ", 3);
    len += 2;
  }
  va_start(ap, fmt);
  vsnprintf(ctx->note + len, sizeof(ctx->note) - len, fmt, ap);
  va_end(ap);
  fpt_note("%s", ctx->note + len);
}

int fx_rand(fx_ctx_t *ctx, int lo, int hi) {
  ctx->rng = ctx->rng * 1103515245u + 12345u;
  return lo + (int)((ctx->rng >> 8) % (unsigned)(hi - lo + 1));
}

int fx_engine_start(fx_ctx_t *ctx) {
  char log[700];
  snprintf(log, sizeof(log), "%s/%s-engine-%d.log", ctx->logdir, ctx->row->id, ++ctx->starts);
  unlink(log); /* a fresh log: the suite reads it (assignment, the metrics port) */
  ctx->engine = fpe_engine_start(&ctx->env, ctx->settings, log);
  return ctx->engine ? 0 : -1;
}

static int copy_file(const char *from, const char *to) {
  size_t len;
  char *text = fpt_read_file(from, &len);
  FILE *f;
  int ok;
  if (!text) return -1;
  f = fopen(to, "w");
  ok = f && fwrite(text, 1, len, f) == len;
  if (f && fclose(f) != 0) ok = 0;
  free(text);
  return ok ? 0 : -1;
}

/* The row's rules: core.count, core.alarm, core.resolve of tests/kafka/rules-core (not
 * order.lua: its chunk-local memory of offsets fires on any replay inside one process, such
 * as a lost assignment taken back, which is the rule's artefact, not the engine's), plus
 * the runaway rule of an L row. */
static int make_rules(fx_ctx_t *ctx) {
  static const char *const core[] = {"count.lua", "alarm.lua", "resolve.lua"};
  char from[1600], to[1600];
  snprintf(ctx->rules_dir, sizeof(ctx->rules_dir), "%s/%s-rules", ctx->logdir, ctx->row->id);
  if (mkdir(ctx->rules_dir, 0755) != 0 && errno != EEXIST) {
    FPT_FAIL("mkdir %s: %s", ctx->rules_dir, strerror(errno));
    return -1;
  }
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof(from), "%s/tests/kafka/rules-core/%s", FP_SOURCE_DIR, core[i]);
    snprintf(to, sizeof(to), "%s/%s", ctx->rules_dir, core[i]);
    if (copy_file(from, to) != 0) {
      FPT_FAIL("copy %s to %s failed", from, to);
      return -1;
    }
  }
  if (ctx->row->kind == FX_RULES) {
    snprintf(from, sizeof(from), "%s/tests/faults/rules-escape/%s", FP_SOURCE_DIR, bad_rules[ctx->param]);
    snprintf(to, sizeof(to), "%s/%s", ctx->rules_dir, bad_rules[ctx->param]);
    if (copy_file(from, to) != 0) {
      FPT_FAIL("copy %s to %s failed", from, to);
      return -1;
    }
  }
  return 0;
}

static unsigned env_seq;

/* Creates a topic on the real broker or in the mock cluster. */
static int topic_create(fx_ctx_t *ctx, const char *topic, int nparts, const char *const *config) {
  if (ctx->row->mock) return fx_mock_cmd(ctx, "topic %s %d", topic, nparts);
  return fpt_topic_create(topic, nparts, config);
}

/* Like fpe_env_init / fpe_env_init_sibling, for the real broker or the mock cluster (which
 * has no CreateTopics), with the row's rules dir and topic configuration. */
static int env_make(fx_ctx_t *ctx, fpe_env_t *env, const char *name, const fpe_env_t *base) {
  char tag[96];
  const char *cfg = ctx->row->kind == FX_INPUT ? fx_hostile_topic_config(ctx->param) : NULL;
  const char *const config[] = {"max.message.bytes", cfg, NULL};
  memset(env, 0, sizeof(*env));
  env->nparts = FX_NPARTS;
  snprintf(env->rules, sizeof(env->rules), "%s", ctx->rules_dir);
  snprintf(env->prefix, sizeof(env->prefix), "fx-%s-%d-%u", name, (int)getpid(), ++env_seq);
  if (base) {
    env->in = base->in;
  } else {
    snprintf(tag, sizeof(tag), "%s-in", name);
    env->in = fpt_topic_name(tag);
    env->own_in = 1;
  }
  snprintf(tag, sizeof(tag), "%s-out", name);
  env->out = fpt_topic_name(tag);
  snprintf(tag, sizeof(tag), "%s-dlq", name);
  env->dlq = fpt_topic_name(tag);
  snprintf(tag, sizeof(tag), "%s-group", name);
  env->group = fpt_topic_name(tag);
  if (!env->in || !env->out || !env->dlq || !env->group) {
    FPT_FAIL("env_make: out of memory");
    return -1;
  }
  if (!base && topic_create(ctx, env->in, FX_NPARTS, cfg ? config : NULL) != 0) return -1;
  if (topic_create(ctx, env->out, 1, NULL) != 0 || topic_create(ctx, env->dlq, 1, NULL) != 0) return -1;
  return 0;
}

static void redis_unlink_prefix(const char *prefix) {
  redisContext *c = fpt_redis_connect();
  char cursor[32] = "0";
  if (!c) return;
  do {
    redisReply *r = fpt_redis_cmd(c, "SCAN %s MATCH %s:* COUNT 1000", cursor, prefix);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      freeReplyObject(r);
      break;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++)
      freeReplyObject(fpt_redis_cmd(c, "UNLINK %s", r->element[1]->element[i]->str));
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  redisFree(c);
}

/* fpe_env_cleanup for the real broker; the mock cluster vanishes with its host. */
static void env_free(fx_ctx_t *ctx, fpe_env_t *env) {
  if (!env->out && !env->in) return;
  if (!ctx->row->mock) {
    fpe_env_cleanup(env);
    return;
  }
  if (env->prefix[0]) redis_unlink_prefix(env->prefix);
  if (env->own_in) free(env->in);
  free(env->out), free(env->dlq), free(env->group);
  memset(env, 0, sizeof(*env));
}

/* Restarts an engine that exited on its own (a supervisor's job), one second later. */
static void supervise(fx_ctx_t *ctx) {
  if (ctx->engine && !fpt_proc_running(ctx->engine)) {
    int rc = fpt_proc_wait(ctx->engine, 0);
    ctx->exits++;
    if (ctx->exits == 1) fx_note(ctx, "engine exited with %d by itself (restarted)", rc);
    FPT_CHECK(ctx->row->may_exit, "engine exited with %d during the row (log %s)", rc, fpt_proc_log(ctx->engine));
    fpt_proc_dump_log(ctx->engine, 15);
    fpt_proc_free(ctx->engine);
    ctx->engine = NULL;
    ctx->restart_at = fpt_now_ms() + 1000;
  }
  if (!ctx->engine && ctx->restart_at && fpt_now_ms() >= ctx->restart_at) {
    ctx->restart_at = 0;
    fx_engine_start(ctx);
  }
}

/* 1 when every partition's committed offset equals end[] */
static int committed_at(fx_ctx_t *ctx, const int64_t *end) {
  int64_t c[FPE_MAX_PARTS];
  if (fpe_committed(&ctx->env, c) < 0) return 0;
  for (int i = 0; i < FX_NPARTS; i++)
    if ((c[i] < 0 ? 0 : c[i]) != end[i]) return 0;
  return 1;
}

/* Counts the lines of two sorted arrays that differ (either side). */
static int64_t lines_diff(char **a, size_t na, char **b, size_t nb, const char *what) {
  size_t i = 0, j = 0;
  int64_t d = 0;
  while (i < na || j < nb) {
    int c = i == na ? 1 : j == nb ? -1 : strcmp(a[i], b[j]);
    if (c == 0) {
      i++, j++;
      continue;
    }
    if (d++ < 5) fprintf(stderr, "  %s: only in %s: %s\n", what, c < 0 ? "faulted run" : "reference", c < 0 ? a[i] : b[j]);
    if (c < 0) i++;
    else j++;
  }
  return d;
}

static int64_t windows_diff(fx_ctx_t *ctx, const char *rule) {
  size_t ng = 0, nw = 0;
  char **g = fpe_windows_dump(&ctx->env, rule, &ng), **w = fpe_windows_dump(&ctx->ref, rule, &nw);
  int64_t d = -1;
  if (g && w) {
    d = lines_diff(g, ng, w, nw, rule);
    FPT_CHECK(nw > 0, "the reference has %s windows", rule);
    FPT_CHECK(d == 0, "%s: %" PRId64 " window line(s) differ from the reference (%zu vs %zu)", rule, d, ng, nw);
  }
  fpe_lines_free(g, ng);
  fpe_lines_free(w, nw);
  return d;
}

/* Reads one series of the engine's /metrics ("name{labels}" as printed), -1 if absent. */
static double metric(const fpt_proc_t *p, const char *series) {
  enum { CAP = 4 << 20 };
  char *log = fpt_proc_output(p, NULL), *at, *buf = NULL, *save = NULL;
  const char *req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  int port = -1, fd = -1;
  size_t got = 0, slen = strlen(series);
  double v = -1;
  struct sockaddr_in sa;
  for (at = log; at && (at = strstr(at, "listening on 127.0.0.1:")); at += 23) port = (int)strtol(at + 23, NULL, 10);
  free(log);
  if (port <= 0 || !(buf = malloc(CAP))) goto out;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) goto out;
  if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) goto out;
  for (ssize_t r; got + 1 < CAP && (r = read(fd, buf + got, CAP - 1 - got)) > 0;) got += (size_t)r;
  buf[got] = '\0';
  for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    if (strncmp(line, series, slen) == 0 && line[slen] == ' ') v = strtod(line + slen + 1, NULL);
out:
  if (fd >= 0) close(fd);
  free(buf);
  return v;
}

/* ------------------------------------------------------------------------------------ */
/* The scenario                                                                          */

static int produce_chunk(fx_ctx_t *ctx, int c, int chunk) {
  fpe_gen_t g = {c * chunk, chunk, FX_NBRANDS, FX_T0, FX_STEP_MS, ctx->row->kind == FX_STREAM ? 1000 : 0,
                 ctx->n - FX_QUIET_TAIL};
  if (fpe_produce(ctx->env.in, &g, &ctx->sent) != 0) return -1;
  if (ctx->row->kind == FX_INPUT && c + 1 < ctx->nchunks) return fx_hostile_produce(ctx, ctx->param, c);
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Names the duplicated incident events (status and event id) in the notes, for the
 * post-mortem: each record's "<event_id> <status>", sorted, adjacent equals reported. */
static void note_duplicates(fx_ctx_t *ctx) {
  fpt_records_t *r = fpt_consume_all(ctx->env.out, FPT_READ_COMMITTED, 60000);
  char **keys = r ? calloc(r->n + 1, sizeof(*keys)) : NULL, list[400] = "";
  size_t n = 0, shown = 0;
  for (size_t i = 0; keys && i < r->n; i++) {
    char id[128] = "", status[32] = "?", *at;
    if (!r->recs[i].value || !(at = strstr(r->recs[i].value, "\"event_id\":\""))) continue;
    sscanf(at + 12, "%127[^\"]", id);
    if ((at = strstr(r->recs[i].value, "\"status\":\""))) sscanf(at + 10, "%31[^\"]", status);
    size_t len = strlen(id) + strlen(status) + 2;
    if (!(keys[n] = malloc(len))) break;
    snprintf(keys[n++], len, "%s %s", id, status);
  }
  if (n) qsort(keys, n, sizeof(*keys), cmp_str);
  for (size_t i = 1; i < n; i++)
    if (strcmp(keys[i], keys[i - 1]) == 0 && (i < 2 || strcmp(keys[i], keys[i - 2]) != 0) && shown++ < 3)
      snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", shown > 1 ? ", " : "", keys[i]);
  for (size_t i = 0; i < n; i++) free(keys[i]);
  free(keys);
  fpt_records_free(r);
  if (shown) fx_note(ctx, "duplicated (event_id status): %s", list);
}

/* Produce faults on the mock (K3, K4) hit every producer, the suite's too: its idempotent
 * producer can write a batch twice under the mock (librdkafka 2.0.2's mock broker does not
 * deduplicate after a dropped connection). Such copies are input like any other (the engine
 * must count them, as I10's upstream duplicate), so the model is then taken from the input
 * topic itself: fpe_produce's valid mentions start with {"id":"m-, its malformed ones not. */
static void recount_input(fx_ctx_t *ctx, int64_t total) {
  fpt_records_t *r = fpt_consume_all(ctx->env.in, FPT_READ_UNCOMMITTED, 60000);
  int64_t valid = 0, bad = 0;
  if (!FPT_CHECK(r && r->complete, "read the input topic back")) {
    fpt_records_free(r);
    return;
  }
  for (size_t i = 0; i < r->n; i++) {
    if (r->recs[i].value && strncmp(r->recs[i].value, "{\"id\":\"m-", 9) == 0) valid++;
    else bad++;
  }
  fpt_records_free(r);
  fx_note(ctx, "the suite's producer wrote %" PRId64 " message(s) twice under the fault; model recounted from the topic",
          total - ctx->sent.valid - ctx->sent.bad);
  ctx->sent.valid = valid;
  ctx->sent.bad = bad;
}

/* K9: the fault must have reached the engine's emit-again path, not been retried inside
 * librdkafka. */
static void fx_k9_check(fx_ctx_t *ctx) {
  double failed = metric(ctx->engine, "flashpoint_output_failures_total");
  int logged = fpe_log_count(ctx->engine, "not acknowledged");
  FPT_CHECK(failed >= 1 && logged >= 1, "failed delivery reports were counted (%.0f in /metrics) and the outputs emitted again (%d log lines)",
            failed, logged);
  fx_note(ctx, "%.0f output(s) not acknowledged, emitted again (%d log lines)", failed, logged);
}

static void run_row(void) {
  fx_ctx_t *ctx = &ctx_g;
  const fx_row_t *row = ctx->row;
  int chunk = ctx->n / ctx->nchunks, c = 0, fault_on = 0, fault_done = 0;
  int64_t end[FPE_MAX_PARTS], t_caught = -1;
  size_t ns = 0;

  ctx->settings[ns++] = "workers=2";
  ctx->settings[ns++] = "consumer.session.timeout.ms=6000";
  ctx->settings[ns++] = "consumer.heartbeat.interval.ms=500";
  ctx->settings[ns++] = "http.port=0";
  for (size_t i = 0; row->extra && row->extra[i] && ns + 1 < sizeof(ctx->settings) / sizeof(ctx->settings[0]); i++)
    ctx->settings[ns++] = row->extra[i];
  ctx->settings[ns] = NULL;

  if (row->mock && fx_mock_start(ctx) != 0) goto out;
  if (make_rules(ctx) != 0) goto out;
  if (env_make(ctx, &ctx->env, row->id[0] == 'K' ? "fxk" : "fx", NULL) != 0) goto out;
  if (env_make(ctx, &ctx->ref, "fxref", &ctx->env) != 0) goto out;
  if (row->setup) row->setup(ctx);
  if (fx_engine_start(ctx) != 0) goto out;
  FPT_CHECK(fpe_wait_assigned(ctx->engine, 30000), "engine got partitions");

  /* produce, inject, hold, clear */
  while (c < ctx->nchunks || fault_on || !fault_done) {
    int64_t next = fpt_now_ms() + (fault_done ? 0 : row->pace_ms);
    if (c < ctx->nchunks && (!fault_on || row->produce_during)) {
      if (!FPT_CHECK(produce_chunk(ctx, c, chunk) == 0, "produce chunk %d", c)) goto out;
      c++;
    }
    if (!fault_on && !fault_done && c >= row->fault_chunk) {
      ctx->t_inject = fpt_now_ms();
      if (row->inject) row->inject(ctx);
      fault_on = 1;
    }
    if (fault_on) {
      int done = row->tick ? row->tick(ctx) : 0;
      if (done || fpt_now_ms() - ctx->t_inject >= row->hold_ms) {
        if (row->clear) row->clear(ctx);
        ctx->t_clear = fpt_now_ms();
        fault_on = 0;
        fault_done = 1;
      }
    }
    supervise(ctx);
    while (fpt_now_ms() < next) usleep(10000); /* pacing the producer, not a correctness wait */
  }
  if (row->kind != FX_STREAM) ctx->t_clear = fpt_now_ms(); /* no fault: from the end of the input */

  /* recovery: committed = end of every partition */
  {
    int64_t total = fpe_end_offsets(&ctx->env, end);
    if (total != ctx->sent.valid + ctx->sent.bad && row->kind == FX_STREAM && row->mock) recount_input(ctx, total);
    FPT_CHECK(total == ctx->sent.valid + ctx->sent.bad, "end offsets (%" PRId64 ") = messages produced (%" PRId64 ")",
              total, ctx->sent.valid + ctx->sent.bad);
  }
  for (;;) {
    supervise(ctx);
    if (committed_at(ctx, end)) {
      t_caught = fpt_now_ms();
      break;
    }
    if (fpt_now_ms() - ctx->t_clear > 4 * FX_RECOVERY_MS) break;
    usleep(250000);
  }
  if (ctx->exits > 1) fx_note(ctx, "%d exits in all", ctx->exits);
  res_g.recovered = t_caught >= 0;
  res_g.recovery_ms = t_caught >= 0 ? t_caught - ctx->t_clear : -1;
  FPT_CHECK(t_caught >= 0 && res_g.recovery_ms <= FX_RECOVERY_MS,
            "committed = end offsets within %d s of the fault clearing (%s: %.1f s)", FX_RECOVERY_MS / 1000,
            t_caught >= 0 ? "took" : "not after", (double)(t_caught >= 0 ? res_g.recovery_ms : fpt_now_ms() - ctx->t_clear) / 1000.0);
  if (row->kind == FX_RULES && ctx->engine) {
    char series[160];
    double errors, quar;
    snprintf(series, sizeof(series), "flashpoint_rule_errors_total{rule=\"%s\"}", bad_rule_ids[ctx->param]);
    errors = metric(ctx->engine, series);
    snprintf(series, sizeof(series), "flashpoint_rule_quarantines_total{rule=\"%s\"}", bad_rule_ids[ctx->param]);
    quar = metric(ctx->engine, series);
    snprintf(series, sizeof(series), "rule %s quarantined", bad_rule_ids[ctx->param]);
    int logged = fpe_log_count(ctx->engine, series);
    FPT_CHECK(logged >= 1, "the runaway rule was quarantined (%d log lines)", logged);
    FPT_CHECK(errors >= 1 && quar >= 1, "the runaway rule's failures are counted in /metrics (%s: %.0f errors, %.0f quarantines)",
              bad_rule_ids[ctx->param], errors, quar);
    fx_note(ctx, "%s: /metrics %.0f errors, %.0f quarantines; log: quarantined in %d worker(s)", bad_rule_ids[ctx->param],
            errors, quar, logged);
  }
  if (row->check && ctx->engine) row->check(ctx);
  if (ctx->engine) {
    int rc;
    FPT_CHECK_EQ_INT(fpt_proc_signal(ctx->engine, SIGTERM), 0);
    rc = fpt_proc_wait(ctx->engine, 15000);
    FPT_CHECK(rc == 0, "engine exit code %d after SIGTERM", rc);
    if (rc != 0 || !res_g.recovered) fpt_proc_dump_log(ctx->engine, 40);
    fpt_proc_free(ctx->engine);
    ctx->engine = NULL;
  }

  /* the reference, then the oracle */
  if (fpe_run_to_end(&ctx->ref, ctx->settings, 120000) != 0) goto out;
  {
    int64_t sum = fpe_windows_sum(&ctx->env, "core.count"), dlq_records = 0, dlq;
    int64_t d1 = windows_diff(ctx, "core.count"), d2 = windows_diff(ctx, "core.alarm"), d3 = windows_diff(ctx, "core.resolve");
    dlq = fpe_dlq_distinct(ctx->env.dlq, &dlq_records);
    res_g.mentions = ctx->sent.valid + ctx->sent.bad;
    res_g.lost = (sum >= 0 && sum < ctx->sent.valid ? ctx->sent.valid - sum : 0) +
                 (dlq >= 0 && dlq < ctx->sent.bad ? ctx->sent.bad - dlq : 0);
    res_g.werr = (d1 > 0 ? d1 : 0) + (d2 > 0 ? d2 : 0) + (d3 > 0 ? d3 : 0) + (sum > ctx->sent.valid ? sum - ctx->sent.valid : 0);
    FPT_CHECK_EQ_INT(sum, ctx->sent.valid);
    FPT_CHECK_EQ_INT(dlq, ctx->sent.bad);
    if (dlq_records > dlq) fx_note(ctx, "%" PRId64 " duplicate dead letter(s)", dlq_records - dlq);
    if (row->kind == FX_INPUT) /* no fault: each bad message dead-lettered exactly once */
      FPT_CHECK(dlq_records == dlq, "%" PRId64 " dead-letter records for %" PRId64 " messages", dlq_records, dlq);
  }
  {
    fpe_events_t *got = fpe_events_read(ctx->env.out), *want = fpe_events_read(ctx->ref.out);
    if (FPT_CHECK(got && want, "read both incident topics")) {
      res_g.dups = (int64_t)(got->records - got->n - got->bad);
      if (!fpe_events_check_equal(got, want)) fx_note(ctx, "incident events differ from the reference (%zu vs %zu ids, %zu conflicts)",
                                                      got->n, want->n, got->conflicts);
      FPT_CHECK(want->n > 0, "the reference has incidents");
      if (res_g.dups > 0) note_duplicates(ctx);
      if (row->no_dups) FPT_CHECK(res_g.dups == 0, "no duplicate incident events after graceful stops (%" PRId64 ")", res_g.dups);
    }
    fpe_events_free(got);
    fpe_events_free(want);
  }
out:
  if (fault_on && row->clear) row->clear(ctx); /* a row that stopped early leaves no fault behind */
  fpt_proc_free(ctx->engine);
  ctx->engine = NULL;
  env_free(ctx, &ctx->ref);
  env_free(ctx, &ctx->env);
  if (row->mock) fx_mock_stop(ctx);
}

/* ------------------------------------------------------------------------------------ */

/* SIGINT/SIGTERM (run.sh's trap): take our engine and mock host down with us; the engine
 * runs in a process group of its own and would outlive the suite otherwise. */
static void on_signal(int sig) {
  if (ctx_g.engine) kill(-fpt_proc_pid(ctx_g.engine), SIGKILL);
  if (ctx_g.mock_pid > 0) kill(-ctx_g.mock_pid, SIGKILL);
  _exit(128 + sig);
}

static void usage(void) {
  fprintf(stderr, "usage: faults_run [--ci] [--logdir DIR] [--seed N] ROW | faults_run --list [--ci]\n");
}

int main(int argc, char **argv) {
  const char *only = NULL, *logdir = NULL;
  int ci = 0, list = 0, rc;
  char recovery[32] = "-";
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  const fx_row_t *row = NULL;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--ci") == 0) ci = 1;
    else if (strcmp(argv[i], "--list") == 0) list = 1;
    else if (strcmp(argv[i], "--logdir") == 0 && i + 1 < argc) logdir = argv[++i];
    else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (argv[i][0] != '-' && !only) only = argv[i];
    else {
      usage();
      return 2;
    }
  }
  if (list) {
    for (size_t i = 0; i < NROWS; i++)
      if (!ci || rows[i].ci) printf("%s\n", rows[i].id);
    return 0;
  }
  for (size_t i = 0; only && i < NROWS; i++)
    if (strcmp(rows[i].id, only) == 0) row = &rows[i];
  if (!row) {
    usage();
    return 2;
  }
  memset(&ctx_g, 0, sizeof(ctx_g));
  ctx_g.row = row;
  ctx_g.ci = ci;
  ctx_g.n = ci ? row->ci_n : row->n;
  ctx_g.param = ci ? row->ci_param : row->param;
  ctx_g.nchunks = ci ? row->nchunks * row->ci_n / row->n : row->nchunks;
  ctx_g.rng = seed;
  ctx_g.mock_pid = -1;
  if (logdir) {
    snprintf(ctx_g.logdir, sizeof(ctx_g.logdir), "%s", logdir);
  } else {
    char *d = fpt_tmpdir("faults");
    if (!d) return 1;
    snprintf(ctx_g.logdir, sizeof(ctx_g.logdir), "%s", d);
    free(d);
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  fprintf(stderr, "row %s: %s (seed %u, logs in %s)\n", row->id, row->what, seed, ctx_g.logdir);
  fpt_run(row->what, run_row);
  rc = fpt_done();
  if (res_g.recovery_ms >= 0) snprintf(recovery, sizeof(recovery), "%.1f", (double)res_g.recovery_ms / 1000.0);
  printf("FXROW\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\t%s\t%s%sseed %u\n", row->id, row->what,
         res_g.mentions, res_g.lost, res_g.dups, res_g.werr, recovery, rc == 0 && res_g.recovered ? "PASS" : "FAIL", ctx_g.note,
         ctx_g.note[0] ? "; " : "", seed);
  fflush(stdout);
  return rc == 0 && res_g.recovered ? 0 : 1;
}

/*
 * inject.c: the fault suite's injectors (the callbacks of faults.c's row table) and the
 * host of the mock cluster.
 *
 * Each fault acts on something the suite started itself: its own engine processes, the
 * redis-server and Kafka broker of its own services env file (FP_SERVICES_ENV, through
 * services.sh or the pid it wrote), or its own faults_mockhost child. Ticks are called
 * every loop turn (about pace_ms) while the fault holds and act when ctx->next_tick is due.
 *
 * ApiKeys (not in an installed header; src/rdkafka_protocol.h): Produce 0, OffsetCommit 8,
 * OffsetFetch 9, FindCoordinator 10, JoinGroup 11, Heartbeat 12.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faults.h"

enum { API_PRODUCE = 0, API_OFFSET_COMMIT = 8, API_OFFSET_FETCH = 9, API_FIND_COORDINATOR = 10,
       API_JOIN_GROUP = 11, API_HEARTBEAT = 12 };

static int due(fx_ctx_t *ctx, int every_ms) {
  int64_t now = fpt_now_ms();
  if (now < ctx->next_tick) return 0;
  ctx->next_tick = now + every_ms;
  return 1;
}

/* ------------------------------------------------------------------------------------ */
/* The engine                                                                            */

/* E1: once the current engine has partitions, wait a random 0.2-3 s, SIGKILL it and start
 * another at once; clear after param kills. */
void fx_e1_inject(fx_ctx_t *ctx) { ctx->next_tick = 0; }

int fx_e1_tick(fx_ctx_t *ctx) {
  int rc;
  if (!ctx->engine) return 0;
  if (ctx->next_tick == 0) {
    if (fpe_log_assigned(ctx->engine)) ctx->next_tick = fpt_now_ms() + fx_rand(ctx, 200, 3000);
    return 0;
  }
  if (fpt_now_ms() < ctx->next_tick) return 0;
  rc = fpt_proc_kill(ctx->engine);
  FPT_CHECK(rc == 128 + SIGKILL, "kill %d: the engine was running (status %d)", ctx->kills + 1, rc);
  fpt_proc_free(ctx->engine);
  ctx->engine = NULL;
  ctx->kills++;
  ctx->next_tick = 0;
  {
    /* how far the dead engine got in Redis beyond what the group committed: replayed next */
    int64_t c[FPE_MAX_PARTS], f[FPE_MAX_PARTS], lf[FPE_MAX_PARTS];
    if (fpe_committed(&ctx->env, c) >= 0 && fpe_fences(&ctx->env, 0, f) == 0 && fpe_fences(&ctx->env, 1, lf) == 0)
      for (int i = 0; i < FX_NPARTS; i++) {
        int64_t from = c[i] < 0 ? 0 : c[i], upto = f[i] > lf[i] ? f[i] : lf[i];
        if (upto + 1 > from) ctx->replayed += upto + 1 - from;
      }
  }
  fx_engine_start(ctx);
  if (ctx->kills >= ctx->param) {
    fx_note(ctx, "%d kills, %" PRId64 " offsets applied in Redis beyond the commit (replayed)", ctx->kills, ctx->replayed);
    return 1;
  }
  return 0;
}

/* E2: the same with SIGTERM (exit 0 expected, within 15 s); clear after param stops. */
void fx_e2_inject(fx_ctx_t *ctx) { ctx->next_tick = 0; }

int fx_e2_tick(fx_ctx_t *ctx) {
  int rc;
  if (!ctx->engine) return 0;
  if (ctx->next_tick == 0) {
    if (fpe_log_assigned(ctx->engine)) ctx->next_tick = fpt_now_ms() + fx_rand(ctx, 500, 3000);
    return 0;
  }
  if (fpt_now_ms() < ctx->next_tick) return 0;
  FPT_CHECK_EQ_INT(fpt_proc_signal(ctx->engine, SIGTERM), 0);
  rc = fpt_proc_wait(ctx->engine, 15000);
  FPT_CHECK(rc == 0, "stop %d: exit code %d after SIGTERM", ctx->stops + 1, rc);
  fpt_proc_free(ctx->engine);
  ctx->engine = NULL;
  ctx->stops++;
  ctx->next_tick = 0;
  fx_engine_start(ctx);
  if (ctx->stops >= ctx->param) {
    fx_note(ctx, "%d graceful stops", ctx->stops);
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Redis                                                                                 */

static void redis_do(const char *what, const char *fmt, ...) {
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  va_list ap;
  if (!c) return;
  va_start(ap, fmt);
  r = redisvCommand(c, fmt, ap);
  va_end(ap);
  FPT_CHECK(r && r->type != REDIS_REPLY_ERROR, "%s: %s", what, r ? (r->str ? r->str : "ok") : c->errstr);
  freeReplyObject(r);
  redisFree(c);
}

static pid_t redis_pid(void) {
  const char *v = fpt_services_get("FP_TEST_REDIS_PID");
  return v ? (pid_t)strtol(v, NULL, 10) : -1;
}

void fx_r1_inject(fx_ctx_t *ctx) {
  (void)ctx;
  FPT_CHECK_EQ_INT(fpt_services_cmd("kill-redis"), 0);
}

void fx_r1_clear(fx_ctx_t *ctx) {
  (void)ctx;
  FPT_CHECK_EQ_INT(fpt_services_cmd("start-redis"), 0);
}

/* R2: what the engine supports (docs/delivery.md): Redis loses everything while the engine
 * is down; the restarted engine sees fences behind the committed offsets and rebuilds the
 * windows from store.rebuild (1 h) of Kafka time, i.e. the whole stream here. */
void fx_r2_inject(fx_ctx_t *ctx) {
  int rc;
  if (ctx->engine) {
    fpt_proc_signal(ctx->engine, SIGTERM);
    rc = fpt_proc_wait(ctx->engine, 15000);
    FPT_CHECK(rc == 0, "engine stopped for the flush (exit %d)", rc);
    fpt_proc_free(ctx->engine);
    ctx->engine = NULL;
  }
  redis_do("FLUSHALL", "FLUSHALL");
  fx_engine_start(ctx);
  if (ctx->engine) {
    int rebuilt = 0;
    int64_t stop = fpt_now_ms() + 20000;
    /* the worker checks each partition once it is assigned */
    while ((rebuilt = fpe_log_count(ctx->engine, "the state store lost data")) < FX_NPARTS &&
           fpt_now_ms() < stop && fpt_proc_running(ctx->engine))
      usleep(100000);
    fx_note(ctx, "%d partition(s) logged a store-loss rebuild", rebuilt);
    FPT_CHECK(rebuilt == FX_NPARTS, "the restarted engine noticed the loss on every partition (%d log lines)", rebuilt);
  }
}

/* R2b: the same loss with the engine running. */
void fx_r2hot_inject(fx_ctx_t *ctx) {
  (void)ctx;
  redis_do("FLUSHALL", "FLUSHALL");
}

void fx_r3_inject(fx_ctx_t *ctx) {
  pid_t pid = redis_pid();
  (void)ctx;
  FPT_CHECK(pid > 0 && kill(pid, SIGSTOP) == 0, "SIGSTOP redis-server %d: %s", (int)pid, strerror(errno));
}

void fx_r3_clear(fx_ctx_t *ctx) {
  pid_t pid = redis_pid();
  (void)ctx;
  FPT_CHECK(pid > 0 && kill(pid, SIGCONT) == 0, "SIGCONT redis-server %d: %s", (int)pid, strerror(errno));
}

/* R4: DEBUG SLEEP 3 sent on a connection of its own without waiting for the answer (the
 * loop keeps producing); a new one every 3.3 s. */
int fx_r4_tick(fx_ctx_t *ctx) {
  redisContext *c;
  int done = 0;
  if (!due(ctx, 3300)) return 0;
  if (ctx->aux) redisFree(ctx->aux);
  ctx->aux = NULL;
  if (!(c = fpt_redis_connect())) return 0;
  if (redisAppendCommand(c, "DEBUG SLEEP 3") != REDIS_OK) {
    FPT_FAIL("DEBUG SLEEP: %s", c->errstr);
    redisFree(c);
    return 0;
  }
  while (!done)
    if (redisBufferWrite(c, &done) != REDIS_OK) break;
  ctx->aux = c;
  return 0;
}

void fx_r4_clear(fx_ctx_t *ctx) {
  redisContext *c = ctx->aux;
  if (c) {
    redisReply *r = NULL;
    /* the last sleep's answer: Redis is responsive again once it arrives */
    if (redisGetReply(c, (void **)&r) == REDIS_OK) freeReplyObject(r);
    redisFree(c);
  }
  ctx->aux = NULL;
}

int fx_r5_tick(fx_ctx_t *ctx) {
  if (due(ctx, 2000)) redis_do("CLIENT KILL TYPE normal", "CLIENT KILL TYPE normal");
  return 0;
}

void fx_r6_inject(fx_ctx_t *ctx) {
  (void)ctx;
  redis_do("CONFIG SET maxmemory-policy", "CONFIG SET maxmemory-policy noeviction");
  redis_do("CONFIG SET maxmemory 1mb", "CONFIG SET maxmemory 1mb");
}

void fx_r6_clear(fx_ctx_t *ctx) {
  (void)ctx;
  redis_do("CONFIG SET maxmemory 0", "CONFIG SET maxmemory 0");
}

/* R7: maxmemory 1mb and 0 in turn every 15 ms. Writes are refused for one run and let
 * through for the next, often within one take of one worker: a run of a partition must not
 * be applied once an earlier run of that partition was refused (worker.c, process_run). */
typedef struct {
  pthread_t thread;
  _Atomic int stop;
  int flips;
} fx_flap_t;

static void *flap_main(void *arg) {
  fx_flap_t *f = arg;
  redisContext *c = fpt_redis_connect();
  for (int on = 1; c && !atomic_load(&f->stop); on = !on) {
    redisReply *r = redisCommand(c, "CONFIG SET maxmemory %s", on ? "1mb" : "0");
    if (!r) break;
    freeReplyObject(r);
    f->flips++;
    usleep(15000);
  }
  redisFree(c);
  return NULL;
}

void fx_r7_inject(fx_ctx_t *ctx) {
  fx_flap_t *f = calloc(1, sizeof(*f));
  redis_do("CONFIG SET maxmemory-policy", "CONFIG SET maxmemory-policy noeviction");
  if (!FPT_CHECK(f != NULL, "allocate the flapper")) return;
  if (!FPT_CHECK(pthread_create(&f->thread, NULL, flap_main, f) == 0, "start the flapper")) {
    free(f);
    return;
  }
  ctx->aux = f;
}

void fx_r7_clear(fx_ctx_t *ctx) {
  fx_flap_t *f = ctx->aux;
  if (f) {
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    FPT_CHECK(f->flips >= 100, "maxmemory flipped %d times", f->flips);
    fx_note(ctx, "maxmemory flipped %d times", f->flips);
    free(f);
  }
  ctx->aux = NULL;
  redis_do("CONFIG SET maxmemory 0", "CONFIG SET maxmemory 0");
}

/* ------------------------------------------------------------------------------------ */
/* The real broker                                                                       */

void fx_k12_inject(fx_ctx_t *ctx) {
  (void)ctx;
  FPT_CHECK_EQ_INT(fpt_services_cmd("kill-kafka"), 0);
}

void fx_k12_clear(fx_ctx_t *ctx) {
  (void)ctx;
  FPT_CHECK_EQ_INT(fpt_services_cmd("start-kafka"), 0); /* returns once the broker answers */
}

/* ------------------------------------------------------------------------------------ */
/* The mock cluster                                                                      */

void fx_k1_inject(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "down -1"); }
void fx_k1_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "up -1"); }
void fx_k2_inject(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "rtt -1 2000"); }
void fx_k2_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "rtt -1 0"); }

int fx_k3_tick(fx_ctx_t *ctx) {
  if (due(ctx, 1000)) fx_mock_cmd(ctx, "err %d %d 5", API_PRODUCE, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
  return 0;
}
void fx_k3_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "clear %d", API_PRODUCE); }

int fx_k4_tick(fx_ctx_t *ctx) {
  if (due(ctx, 1000)) fx_mock_cmd(ctx, "err %d %d 3", API_PRODUCE, RD_KAFKA_RESP_ERR__TRANSPORT);
  return 0;
}
void fx_k4_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "clear %d", API_PRODUCE); }

int fx_k5_tick(fx_ctx_t *ctx) {
  if (due(ctx, 1000))
    fx_mock_cmd(ctx, "err %d %d 5", API_OFFSET_COMMIT,
                (ctx->kills++ % 2) ? RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION : RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
  return 0;
}
void fx_k5_clear(fx_ctx_t *ctx) {
  ctx->kills = 0;
  fx_mock_cmd(ctx, "clear %d", API_OFFSET_COMMIT);
}

int fx_k6_tick(fx_ctx_t *ctx) {
  if (due(ctx, 3000)) fx_mock_cmd(ctx, "err %d %d 5", API_HEARTBEAT, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
  return 0;
}
void fx_k6_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "clear %d", API_HEARTBEAT); }

/* K7: the group's coordinator is broker 1 and every partition leader is on 2 or 3, so
 * taking broker 1 down takes only the coordinator away. */
void fx_k7_setup(fx_ctx_t *ctx) {
  const char *const single[] = {ctx->env.out, ctx->env.dlq, ctx->ref.out, ctx->ref.dlq};
  fx_mock_cmd(ctx, "coord group %s 1", ctx->env.group);
  for (int p = 0; p < FX_NPARTS; p++) fx_mock_cmd(ctx, "leader %s %d %d", ctx->env.in, p, 2 + p % 2);
  for (size_t i = 0; i < 4; i++) fx_mock_cmd(ctx, "leader %s 0 %d", single[i], 2 + (int)i % 2);
}
void fx_k7_inject(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "down 1"); }
void fx_k7_clear(fx_ctx_t *ctx) { fx_mock_cmd(ctx, "up 1"); }

int fx_k8_tick(fx_ctx_t *ctx) {
  if (!due(ctx, 2000)) return 0;
  fx_mock_cmd(ctx, "err %d %d 3", API_OFFSET_COMMIT, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
  fx_mock_cmd(ctx, "err %d %d 3", API_FIND_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
  fx_mock_cmd(ctx, "err %d %d 3", API_JOIN_GROUP, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
  fx_mock_cmd(ctx, "err %d %d 3", API_OFFSET_FETCH, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
  /* and a rejoin, so that JoinGroup and OffsetFetch are really sent */
  fx_mock_cmd(ctx, "err %d %d 1", API_HEARTBEAT, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
  return 0;
}
/* K9: the engine's output and dead-letter topics lead on broker 3 alone (the input on 1 and 2,
 * the group on 1, the reference's outputs on 2), and broker 3 answers Produce with a
 * permanent error: librdkafka does not retry it, so the delivery reports fail and the
 * worker must emit the round's outputs again before it stores their offsets. Each turn of
 * the row's loop (300 ms) tops broker 3 up to one queued error, so for 6 s its Produce
 * requests keep failing; nothing to clear: at most one error is left for the next request. */
void fx_k9_setup(fx_ctx_t *ctx) {
  fx_mock_cmd(ctx, "coord group %s 1", ctx->env.group);
  for (int p = 0; p < FX_NPARTS; p++) fx_mock_cmd(ctx, "leader %s %d %d", ctx->env.in, p, 1 + p % 2);
  fx_mock_cmd(ctx, "leader %s 0 3", ctx->env.out);
  fx_mock_cmd(ctx, "leader %s 0 3", ctx->env.dlq);
  fx_mock_cmd(ctx, "leader %s 0 2", ctx->ref.out);
  fx_mock_cmd(ctx, "leader %s 0 2", ctx->ref.dlq);
}
int fx_k9_tick(fx_ctx_t *ctx) {
  fx_mock_cmd(ctx, "berr 3 %d %d 1", API_PRODUCE, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  return 0;
}

void fx_k8_clear(fx_ctx_t *ctx) {
  static const int apis[] = {API_OFFSET_COMMIT, API_FIND_COORDINATOR, API_JOIN_GROUP, API_OFFSET_FETCH, API_HEARTBEAT};
  for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++) fx_mock_cmd(ctx, "clear %d", apis[i]);
}

/* ------------------------------------------------------------------------------------ */
/* The mock cluster host                                                                 */

/* Reads one line from the host within timeout_ms; @returns its length or -1. */
static int mock_readline(fx_ctx_t *ctx, char *buf, size_t size, int timeout_ms) {
  size_t n = 0;
  int64_t end = fpt_now_ms() + timeout_ms;
  while (n + 1 < size) {
    struct pollfd pfd = {ctx->mock_out, POLLIN, 0};
    int64_t left = end - fpt_now_ms();
    char ch;
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) return -1;
    if (read(ctx->mock_out, &ch, 1) != 1) return -1;
    if (ch == '\n') break;
    buf[n++] = ch;
  }
  buf[n] = '\0';
  return (int)n;
}

int fx_mock_start(fx_ctx_t *ctx) {
  int in[2], out[2];
  char line[512], *text, *at;
  const char *envfile = getenv("FP_SERVICES_ENV");
  FILE *f;

  if (!envfile || pipe(in) != 0 || pipe(out) != 0) {
    FPT_FAIL("mock host: FP_SERVICES_ENV unset or pipe failed");
    return -1;
  }
  ctx->mock_pid = fork();
  if (ctx->mock_pid < 0) {
    FPT_FAIL("fork: %s", strerror(errno));
    return -1;
  }
  if (ctx->mock_pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[0]), close(in[1]), close(out[0]), close(out[1]);
    setpgid(0, 0);
    execl(FX_MOCKHOST, FX_MOCKHOST, "3", (char *)NULL);
    _exit(127);
  }
  close(in[0]), close(out[1]);
  ctx->mock_in = in[1];
  ctx->mock_out = out[0];
  if (mock_readline(ctx, line, sizeof(line), 10000) < 0 || strncmp(line, "bootstrap ", 10) != 0) {
    FPT_FAIL("mock host did not print its bootstrap servers");
    return -1;
  }
  snprintf(ctx->mock_bootstrap, sizeof(ctx->mock_bootstrap), "%s", line + 10);
  /* a services env file whose Kafka is the mock: every testlib helper then talks to it */
  if (!(text = fpt_read_file(envfile, NULL))) {
    FPT_FAIL("cannot read %s", envfile);
    return -1;
  }
  snprintf(ctx->mock_envfile, sizeof(ctx->mock_envfile), "%s/%s-mock.env", ctx->logdir, ctx->row->id);
  if (!(f = fopen(ctx->mock_envfile, "w"))) {
    FPT_FAIL("cannot write %s", ctx->mock_envfile);
    free(text);
    return -1;
  }
  for (char *l = strtok_r(text, "\n", &at); l; l = strtok_r(NULL, "\n", &at))
    if (strncmp(l, "FP_TEST_KAFKA=", 14) != 0) fprintf(f, "%s\n", l);
  fprintf(f, "FP_TEST_KAFKA=%s\n", ctx->mock_bootstrap);
  fclose(f);
  free(text);
  setenv("FP_SERVICES_ENV", ctx->mock_envfile, 1);
  fpt_services_load();
  fpt_note("mock cluster %s", ctx->mock_bootstrap);
  return 0;
}

int fx_mock_cmd(fx_ctx_t *ctx, const char *fmt, ...) {
  char cmd[600], answer[256];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(cmd) - 1) {
    FPT_FAIL("mock command too long");
    return -1;
  }
  cmd[n++] = '\n';
  if (ctx->mock_pid <= 0 || write(ctx->mock_in, cmd, (size_t)n) != n || mock_readline(ctx, answer, sizeof(answer), 10000) < 0) {
    FPT_FAIL("mock host: no answer to %.*s", n - 1, cmd);
    return -1;
  }
  return FPT_CHECK(strcmp(answer, "ok") == 0, "mock host: %.*s: %s", n - 1, cmd, answer) ? 0 : -1;
}

void fx_mock_stop(fx_ctx_t *ctx) {
  int status;
  if (ctx->mock_pid <= 0) return;
  if (write(ctx->mock_in, "quit\n", 5) != 5) { /* gone already */
  }
  close(ctx->mock_in), close(ctx->mock_out);
  for (int i = 0; i < 100 && waitpid(ctx->mock_pid, &status, WNOHANG) == 0; i++) usleep(50000);
  if (waitpid(ctx->mock_pid, &status, WNOHANG) == 0) {
    kill(ctx->mock_pid, SIGKILL);
    waitpid(ctx->mock_pid, &status, 0);
  }
  ctx->mock_pid = -1;
}

/*
 * store_bench.c - throughput of fp_store_apply for batch sizes 1, 100 and 1000, Redis vs
 * the in-process store. Each mention carries 3 ops (COUNT 10m/1m, DISTINCT 10m/1m and
 * BASELINE 7d/1h) over 200 entities, event time advancing 50 ms per mention.
 *
 *   store_bench [redis-host [redis-port [mentions]]]     (default 127.0.0.1 6379 20000)
 *
 * Prints ops/s, mentions/s, and round trips and Redis commands per op (from INFO
 * commandstats deltas, which count the redis.call()s made inside the script).
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "util.h"

static const fp_win_spec_t specs[3] = {{FP_WIN_COUNT, 600000, 60000},
                                       {FP_WIN_DISTINCT, 600000, 60000},
                                       {FP_WIN_BASELINE, 7 * 86400000LL, 3600000}};

/* Sum of calls= over INFO commandstats, or -1. */
static long long redis_calls(redisContext *c) {
  if (!c) return -1;
  redisReply *r = redisCommand(c, "INFO commandstats");
  if (!r || r->type != REDIS_REPLY_STRING) {
    if (r) freeReplyObject(r);
    return -1;
  }
  long long total = 0;
  for (const char *p = r->str; (p = strstr(p, "calls=")) != NULL; p += 6) total += strtoll(p + 6, NULL, 10);
  freeReplyObject(r);
  return total;
}

static void run(const char *label, fp_store_t *st, redisContext *c, size_t mentions, size_t batch,
                int run_id) {
  size_t nops = mentions * 3;
  fp_win_op_t *ops = calloc(nops, sizeof(*ops));
  char (*keys)[48] = calloc(nops, sizeof(*keys));
  char (*members)[16] = calloc(nops, sizeof(*members));
  char source[32], err[256];
  snprintf(source, sizeof(source), "bench:%d", run_id);
  int64_t t0 = 1764000000000LL;
  for (size_t m = 0; m < mentions; m++) {
    unsigned ent = (unsigned)((m * 2654435761u) % 200);
    for (int k = 0; k < 3; k++) {
      size_t i = m * 3 + (size_t)k;
      snprintf(keys[i], sizeof(keys[i]), "b%d|rule%d|ent%u", run_id, k, ent);
      snprintf(members[i], sizeof(members[i]), "user%zu", (m * 7919) % 5000);
      ops[i] = (fp_win_op_t){.offset = (int64_t)m, .key = keys[i], .spec = &specs[k],
                             .ts_ms = t0 + (int64_t)m * 50, .amount = 1,
                             .member = k == 1 ? members[i] : NULL};
    }
  }
  uint64_t rt0 = fp_store_roundtrips(st);
  long long c0 = redis_calls(c);
  int64_t start = fp_mono_ns();
  size_t i = 0;
  while (i < nops) {
    size_t n = batch * 3 < nops - i ? batch * 3 : nops - i;
    if (fp_store_apply(st, source, ops + i, n, ops[i].offset, NULL, err, sizeof(err)) != FP_OK) {
      fprintf(stderr, "%s: %s\n", label, err);
      break;
    }
    i += n;
  }
  double secs = (double)(fp_mono_ns() - start) / 1e9;
  long long c1 = redis_calls(c);
  double rt = (double)(fp_store_roundtrips(st) - rt0);
  printf("%-6s batch %5zu: %9.0f ops/s %9.0f mentions/s  %.4f round trips/op", label, batch,
         (double)i / secs, (double)i / 3 / secs, rt / (double)i);
  if (c0 >= 0 && c1 >= 0)
    printf("  %.2f redis commands/op (incl. script calls)", (double)(c1 - c0 - 1) / (double)i);
  printf("\n");
  free(ops);
  free(keys);
  free(members);
}

int main(int argc, char **argv) {
  const char *host = argc > 1 ? argv[1] : "127.0.0.1";
  int port = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 6379;
  size_t mentions = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 20000;
  char err[256], prefix[32];
  snprintf(prefix, sizeof(prefix), "bench%d", (int)getpid());
  fp_store_redis_conf_t conf = {.host = host, .port = port, .prefix = prefix,
                                .connect_timeout_ms = 1000, .command_timeout_ms = 10000};
  fp_store_t *rs = fp_store_redis_new(&conf, err, sizeof(err));
  if (!rs) fprintf(stderr, "redis: %s (skipping the Redis runs)\n", err);
  redisContext *c = rs ? redisConnect(host, port) : NULL;
  static const size_t batches[] = {1, 100, 1000};
  int id = 0;
  for (size_t b = 0; b < 3; b++) {
    size_t m = batches[b] == 1 ? mentions / 10 : mentions;
    fp_store_t *ms = fp_store_mem_new(err, sizeof(err));
    if (ms) run("mem", ms, NULL, m, batches[b], id++);
    fp_store_destroy(ms);
    if (rs) run("redis", rs, c, m, batches[b], id++);
  }
  if (c) redisFree(c);
  fp_store_destroy(rs);
  return 0;
}

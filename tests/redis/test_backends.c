/*
 * redis tier: the in-process store and Redis give identical incidents for the same input and
 * rules. A generated stream with injected crises is replayed twice through the real binary
 * (`flashpoint replay`, the same pipeline as production), once with each backend; the
 * incident documents must be byte-identical, in the same order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gen.h"
#include "testlib.h"

#define MINUTE 60000LL
#define T0 ((int64_t)1795600800000LL)

static void test_identical_incidents(void) {
  char *dir = fpt_tmpdir("backends"), in[512], out_mem[512], out_redis[512], cmd[2048];
  fp_gen_crisis_t crises[2] = {
      {FP_CRISIS_SLOW_BURN, 1, T0 + 90 * MINUTE, 40 * MINUTE, 60},
      {FP_CRISIS_FLASH_VIRAL, 3, T0 + 150 * MINUTE, 20 * MINUTE, 90},
  };
  fp_gen_conf_t gc = {5, 6, T0, 240 * MINUTE, 12, 2000, 0.0, 2, crises, "b"};
  fp_gen_t *g = fp_gen_new(&gc);
  fp_buf_t line = {0};
  const char *key;
  int crisis, n = 0;
  FILE *f;
  char *a, *b;
  size_t la = 0, lb = 0;

  snprintf(in, sizeof(in), "%s/in.jsonl", dir);
  snprintf(out_mem, sizeof(out_mem), "%s/mem.jsonl", dir);
  snprintf(out_redis, sizeof(out_redis), "%s/redis.jsonl", dir);
  f = fopen(in, "w");
  while (g && fp_gen_next(g, &line, &key, &crisis)) {
    fprintf(f, "%s\n", line.data);
    n++;
  }
  fclose(f);
  fp_gen_destroy(g);
  fp_buf_free(&line);
  fpt_note("%d mentions", n);

  snprintf(cmd, sizeof(cmd), "%s/flashpoint replay --quiet --rules %s/tests/redis/rules-backends --out %s %s",
           FP_BINARY_DIR, FP_SOURCE_DIR, out_mem, in);
  FPT_CHECK_EQ_INT(WEXITSTATUS(system(cmd)), 0);
  snprintf(cmd, sizeof(cmd),
           "%s/flashpoint replay --quiet --rules %s/tests/redis/rules-backends --redis %s:%d --out %s %s",
           FP_BINARY_DIR, FP_SOURCE_DIR, fpt_redis_host(), fpt_redis_port(), out_redis, in);
  FPT_CHECK_EQ_INT(WEXITSTATUS(system(cmd)), 0);
  a = fpt_read_file(out_mem, &la);
  b = fpt_read_file(out_redis, &lb);
  FPT_CHECK(a && b, "both replays wrote their incidents");
  if (a && b) {
    int events = 0;
    for (size_t i = 0; i < la; i++) events += a[i] == '\n';
    fpt_note("%d incident events", events);
    FPT_CHECK(events >= 4, "the crises raised incidents (%d events)", events);
    FPT_CHECK(la == lb && memcmp(a, b, la) == 0, "byte-identical incidents (%zu and %zu bytes)", la, lb);
  }
  free(a), free(b);
  unlink(in), unlink(out_mem), unlink(out_redis);
  rmdir(dir);
  free(dir);
}

int main(void) {
  fpt_run("in-process and Redis stores give identical incidents", test_identical_incidents);
  return fpt_done();
}

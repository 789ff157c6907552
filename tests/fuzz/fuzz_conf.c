/*
 * fuzz_conf.c - libFuzzer target for the configuration parser (engine/conf.c).
 *
 * Byte 0 picks the entry point, the rest is its input:
 *   0: a configuration file (written to a per-process temporary file) for fp_conf_load_file;
 *   1: "key\0value" (split at the first NUL; no NUL: at the first '=') for fp_conf_set;
 *   2: NUL-separated "FLASHPOINT_...=value" strings for fp_conf_load_env;
 *   3: as 0, then every line also through fp_conf_set, then fp_conf_dup.
 * Oracle: only documented codes; a failure carries a reason; secrets read back as
 * "[redacted]" through fp_conf_get (redis.password and any passthrough key naming a
 * password, secret or key); fp_conf_dup succeeds and reads back the same values.
 */
#include <unistd.h>

#include "conf.h"
#include "fuzz_common.h"
#include "log.h"

static char g_path[256];

static void cleanup(void) {
  if (g_path[0]) unlink(g_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *tmp = getenv("TMPDIR");
  fp_log_setup(FP_LOG_OFF, 0);
  snprintf(g_path, sizeof g_path, "%s/fp-fuzz-conf.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(g_path);
  FZ_CHECK(fd >= 0, "mkstemp %s", g_path);
  close(fd);
  atexit(cleanup);
  return 0;
}

static void check_rc(fp_err_t rc, const char *err) {
  FZ_CHECK(rc == FP_OK || rc == FP_ERR_CONFIG || rc == FP_ERR_UNKNOWN_KEY ||
               rc == FP_ERR_INVALID_ARG || rc == FP_ERR_IO,
           "unexpected code %d (%s)", (int)rc, err);
  FZ_CHECK(rc == FP_OK || err[0], "failure %d without a reason", (int)rc);
}

static const char *const k_keys[] = {
    "input.topics", "group.id", "input.max.bytes", "output.topic", "dlq.topic", "rules.dir",
    "rules.instructions", "rules.memory", "rules.deadline.ms", "rules.quarantine.after",
    "workers", "batch.size", "queue.max", "windows.lateness", "delivery.mode",
    "commit.interval.ms", "store.backend", "redis.host", "redis.port", "redis.password",
    "redis.db", "redis.prefix", "redis.timeout.ms", "redis.connect.timeout.ms",
    "incident.hold", "incident.grace", "incident.samples", "log.level", "log.json", "http.port",
    "http.addr", "instance.id", NULL};

/* Every value reads back the same from the copy; secrets are redacted in both. */
static void check_conf(const fp_conf_t *c) {
  char a[4096], b[4096];
  fp_conf_t *d = fp_conf_dup(c);
  FZ_CHECK(d != NULL, "fp_conf_dup failed");
  for (size_t i = 0; k_keys[i]; i++) {
    FZ_CHECK(fp_conf_get(c, k_keys[i], a, sizeof a) == FP_OK, "get %s", k_keys[i]);
    FZ_CHECK(fp_conf_get(d, k_keys[i], b, sizeof b) == FP_OK, "get dup %s", k_keys[i]);
    FZ_CHECK(strcmp(a, b) == 0, "%s differs in the copy", k_keys[i]);
  }
  FZ_CHECK(fp_conf_get(c, "redis.password", a, sizeof a) == FP_OK && !strcmp(a, "[redacted]"),
           "redis.password not redacted");
  FZ_CHECK(c->nkv == d->nkv, "passthrough count differs");
  for (size_t i = 0; i < c->nkv; i++) {
    const char *k = c->kv[i].key;
    FZ_CHECK(fp_conf_get(c, k, a, sizeof a) == FP_OK, "get passthrough %s", k);
    if (strstr(k, "password") || strstr(k, "secret") || strstr(k, "key"))
      FZ_CHECK(!strcmp(a, "[redacted]"), "%s not redacted", k);
    FZ_CHECK(fp_conf_get(d, k, b, sizeof b) == FP_OK && !strcmp(a, b), "%s differs in copy", k);
  }
  fp_conf_destroy(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  fp_err_t rc;
  if (size < 1) return 0;
  uint8_t mode = data[0] & 3;
  data++, size--;
  fp_conf_t *c = fp_conf_new();
  FZ_CHECK(c != NULL, "fp_conf_new");
  err[0] = '\0';

  if (mode == 0 || mode == 3) {
    FILE *f = fopen(g_path, "wb");
    FZ_CHECK(f != NULL, "cannot write %s", g_path);
    if (size) FZ_CHECK(fwrite(data, 1, size, f) == size, "short write");
    fclose(f);
    rc = fp_conf_load_file(c, g_path, err, sizeof err);
    check_rc(rc, err);
    if (rc != FP_OK) FZ_CHECK(strstr(err, g_path) != NULL, "file error without the path: %s", err);
  }
  if (mode == 1 || mode == 3) {
    char *buf = malloc(size + 1), *val;
    memcpy(buf, data, size);
    buf[size] = '\0';
    if (mode == 1) {
      if (memchr(buf, '\0', size)) val = buf + strlen(buf) + 1;
      else if ((val = strchr(buf, '='))) *val++ = '\0';
      else val = buf + size;
      err[0] = '\0';
      rc = fp_conf_set(c, buf, val, err, sizeof err);
      check_rc(rc, err);
    } else { /* each line "key=value" */
      for (char *line = buf; line && line < buf + size;) {
        char *nl = strchr(line, '\n'), *eq;
        if (nl) *nl = '\0';
        if ((eq = strchr(line, '='))) {
          *eq = '\0';
          err[0] = '\0';
          rc = fp_conf_set(c, line, eq + 1, err, sizeof err);
          check_rc(rc, err);
        }
        line = nl ? nl + 1 : NULL;
      }
    }
    free(buf);
  }
  if (mode == 2) {
    char *buf = malloc(size + 1), *env[65];
    size_t ne = 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (char *p = buf; p < buf + size && ne < 64; p += strlen(p) + 1) env[ne++] = p;
    env[ne] = NULL;
    err[0] = '\0';
    rc = fp_conf_load_env(c, env, err, sizeof err);
    check_rc(rc, err);
    free(buf);
  }
  check_conf(c);
  fp_conf_destroy(c);
  return 0;
}

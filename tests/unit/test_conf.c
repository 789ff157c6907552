/* Unit: the configuration table - defaults, types, ranges, unknown keys, file, environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "testlib.h"

static void test_defaults_and_set(void) {
  fp_conf_t *c = fp_conf_new();
  char err[256], buf[128];
  FPT_CHECK(c != NULL, "new");
  FPT_CHECK_EQ_STR(c->input_topics, "mentions");
  FPT_CHECK_EQ_INT(c->lateness_ms, 5 * 60 * 1000);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "windows.lateness", "90s", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(c->lateness_ms, 90000);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "batch.size", "0", err, sizeof(err)), FP_ERR_CONFIG);
  FPT_CHECK(strstr(err, "batch.size") != NULL, "error names the key: %s", err);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "batch.size", "12x", err, sizeof(err)), FP_ERR_CONFIG);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "no.such.key", "1", err, sizeof(err)), FP_ERR_UNKNOWN_KEY);
  FPT_CHECK(strstr(err, "no.such.key") != NULL, "unknown key named: %s", err);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "store.backend", "memory", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(c->backend, FP_BACKEND_MEMORY);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "store.backend", "postgres", err, sizeof(err)), FP_ERR_CONFIG);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "log.json", "maybe", err, sizeof(err)), FP_ERR_CONFIG);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "kafka.bootstrap.servers", "h:1", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "kafka.", "x", err, sizeof(err)), FP_ERR_UNKNOWN_KEY);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "redis.password", "s3cret", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_get(c, "redis.password", buf, sizeof(buf)), FP_OK);
  FPT_CHECK_EQ_STR(buf, "[redacted]");
  FPT_CHECK_EQ_INT(fp_conf_set(c, "kafka.sasl.password", "s3cret", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_get(c, "kafka.sasl.password", buf, sizeof(buf)), FP_OK);
  FPT_CHECK_EQ_STR(buf, "[redacted]");
  FPT_CHECK_EQ_INT(fp_conf_get(c, "store.backend", buf, sizeof(buf)), FP_OK);
  FPT_CHECK_EQ_STR(buf, "memory");
  fp_conf_t *d = fp_conf_dup(c);
  FPT_CHECK(d && d->backend == FP_BACKEND_MEMORY && d->nkv == 2 && strcmp(d->redis_password, "s3cret") == 0,
            "dup copies everything");
  fp_conf_destroy(d);
  fp_conf_destroy(c);
  fp_conf_destroy(NULL);
}

static void test_file_and_env(void) {
  fp_conf_t *c = fp_conf_new();
  char err[512];
  char *dir = fpt_tmpdir("conf");
  char path[512];
  FILE *f;
  snprintf(path, sizeof(path), "%s/fp.conf", dir);
  f = fopen(path, "w");
  fprintf(f, "# comment\n\n  redis.host = redis.internal  \nworkers=3\nkafka.bootstrap.servers = k:9092\n");
  fclose(f);
  FPT_CHECK_EQ_INT(fp_conf_load_file(c, path, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_STR(c->redis_host, "redis.internal");
  FPT_CHECK_EQ_INT(c->workers, 3);
  FPT_CHECK_EQ_INT((long)fp_conf_workers(c, 2), 3); /* set: as given, whatever the cores */
  c->workers = 0;
  FPT_CHECK_EQ_INT((long)fp_conf_workers(c, 2), 4); /* default: two per core */
  FPT_CHECK_EQ_INT((long)fp_conf_workers(c, 1), 2);
  FPT_CHECK_EQ_INT((long)fp_conf_workers(c, -1), 1); /* sysconf failed: one */
  f = fopen(path, "w");
  fprintf(f, "workers = 2\nbogus = 1\n");
  fclose(f);
  FPT_CHECK_EQ_INT(fp_conf_load_file(c, path, err, sizeof(err)), FP_ERR_UNKNOWN_KEY);
  FPT_CHECK(strstr(err, ":2:") && strstr(err, "bogus"), "file and line named: %s", err);
  {
    char *env[] = {"PATH=/bin", "FLASHPOINT_REDIS_PORT=6380", "FLASHPOINT_KAFKA__BOOTSTRAP__SERVERS=k2:9092", NULL};
    FPT_CHECK_EQ_INT(fp_conf_load_env(c, env, err, sizeof(err)), FP_OK);
    FPT_CHECK_EQ_INT(c->redis_port, 6380);
    FPT_CHECK(c->nkv == 1 && strcmp(c->kv[0].value, "k2:9092") == 0, "env overrides the file");
  }
  {
    char *env[] = {"FLASHPOINT_REDIS_PORT=99999", NULL};
    FPT_CHECK_EQ_INT(fp_conf_load_env(c, env, err, sizeof(err)), FP_ERR_CONFIG);
    FPT_CHECK(strstr(err, "FLASHPOINT_REDIS_PORT") != NULL, "env var named: %s", err);
  }
  unlink(path);
  rmdir(dir);
  free(dir);
  fp_conf_destroy(c);
}

static void test_help(void) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  fp_conf_print_help(f, 1);
  fclose(f);
  FPT_CHECK(strstr(buf, "| `windows.lateness` | duration | `5m` |") != NULL, "markdown table row");
  FPT_CHECK(strstr(buf, "kafka.*") != NULL, "passthrough documented");
  free(buf);
}

int main(void) {
  fpt_run("defaults, types and ranges", test_defaults_and_set);
  fpt_run("file and environment", test_file_and_env);
  fpt_run("help table", test_help);
  return fpt_done();
}

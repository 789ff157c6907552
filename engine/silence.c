/*
 * silence.c - owns `flashpoint silence RULE ENTITY DURATION`: writes a silence into the
 * shared state store (store_lc.h), which every engine instance reads with the lifecycle
 * state, so paging for that (rule, entity) stops everywhere at once while the events are
 * still recorded (docs/incident.md, "Silences").
 */
#include "silence.h"

#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "store.h"
#include "store_lc.h"
#include "util.h"

extern char **environ;

int fp_silence_main(int argc, char **argv) {
  char errstr[512], key[400];
  const char *pos[3] = {NULL, NULL, NULL}, *reason = "";
  int npos = 0, rc = 2;
  int64_t ms;
  fp_conf_t *conf = fp_conf_new();
  fp_store_t *st = NULL;
  fp_store_redis_conf_t rc_;

  if (!conf) return 1;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-c") && i + 1 < argc) {
      if (fp_conf_load_file(conf, argv[++i], errstr, sizeof(errstr)) != FP_OK) goto conf_err;
    } else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
      char kv[1024], *eq;
      snprintf(kv, sizeof(kv), "%s", argv[++i]);
      if (!(eq = strchr(kv, '='))) {
        fprintf(stderr, "flashpoint silence: -s expects key=value\n");
        goto out;
      }
      *eq = '\0';
      if (fp_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
    } else if (!strcmp(argv[i], "--reason") && i + 1 < argc) {
      reason = argv[++i];
    } else if (npos < 3 && argv[i][0] != '-') {
      pos[npos++] = argv[i];
    } else {
      npos = -1;
      break;
    }
  }
  if (npos != 3 || fp_duration_parse(pos[2], &ms) != FP_OK) {
    fprintf(stderr, "usage: flashpoint silence RULE ENTITY DURATION [--reason TEXT] [-c FILE] [-s key=value]\n"
                    "       DURATION such as 30m or 4h; 0 lifts the silence\n");
    goto out;
  }
  if (fp_conf_load_env(conf, environ, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
  if (conf->backend != FP_BACKEND_REDIS) {
    fprintf(stderr, "flashpoint silence: silences live in Redis (store.backend=redis)\n");
    goto out;
  }
  memset(&rc_, 0, sizeof(rc_));
  rc_.host = conf->redis_host;
  rc_.port = (int)conf->redis_port;
  rc_.password = conf->redis_password;
  rc_.db = (int)conf->redis_db;
  rc_.prefix = conf->redis_prefix;
  rc_.connect_timeout_ms = (int)conf->redis_connect_timeout_ms;
  rc_.command_timeout_ms = (int)conf->redis_timeout_ms;
  if (!(st = fp_store_redis_new(&rc_, errstr, sizeof(errstr)))) {
    fprintf(stderr, "flashpoint silence: %s\n", errstr);
    rc = 1;
    goto out;
  }
  snprintf(key, sizeof(key), "%s|%s", pos[0], pos[1]);
  if (fp_store_lc_silence(st, key, ms ? fp_now_ms() + ms : 0, reason, errstr, sizeof(errstr)) != FP_OK) {
    fprintf(stderr, "flashpoint silence: %s\n", errstr);
    rc = 1;
    goto out;
  }
  if (ms) printf("silenced %s for %s\n", key, pos[2]);
  else printf("lifted the silence of %s\n", key);
  rc = 0;
  goto out;
conf_err:
  fprintf(stderr, "flashpoint silence: %s\n", errstr);
out:
  fp_store_destroy(st);
  fp_conf_destroy(conf);
  return rc;
}

/*
 * demo.c - owns `flashpoint demo`: the whole engine on embedded defaults, with nothing to
 * install by hand. It starts librdkafka's mock cluster inside the process (the broker), a
 * redis-server on a free loopback port (or the in-process store with --memory), generates a
 * few hours of event-time mentions for several brands with injected crises, runs the engine
 * with the rules of rules/, and prints the incidents as they open, escalate and resolve.
 *
 * The mock cluster is only for this demo and for fault injection; the tests prove delivery
 * on a real broker.
 */
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "flashpoint/flashpoint.h"
#include "gen.h"
#include "log.h"
#include "util.h"

/* input partitions: with the lz4 the demo produces, each holds well under what the mock
 * keeps per partition, whatever the hour (the stream follows a daily rhythm) */
#define DEMO_PARTS 8

static volatile sig_atomic_t demo_interrupted;
static void on_signal(int sig) {
  (void)sig;
  demo_interrupted = 1;
}

static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  if (fd < 0) return -1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* Starts redis-server on @p port; @returns its pid or -1. */
static pid_t start_redis(int port, const char *dir) {
  char portbuf[16];
  pid_t pid;
  snprintf(portbuf, sizeof(portbuf), "%d", port);
  pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execlp("redis-server", "redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", dir, (char *)NULL);
    _exit(127);
  }
  if (pid < 0) return -1;
  for (int i = 0; i < 100; i++) { /* up to 5 s */
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c && !c->err) {
      redisReply *r = redisCommand(c, "PING");
      int ok = r && r->type == REDIS_REPLY_STATUS;
      freeReplyObject(r);
      redisFree(c);
      if (ok) return pid;
    } else if (c) {
      redisFree(c);
    }
    if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
    usleep(50000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

typedef struct {
  fp_engine_t *engine;
  fp_err_t result;
} runner_t;

static void *engine_thread(void *arg) {
  runner_t *r = arg;
  r->result = fp_engine_run(r->engine);
  return NULL;
}

static void print_incident(const char *payload, size_t len, unsigned *counts) {
  json_error_t jerr;
  json_t *ev = json_loadb(payload, len, 0, &jerr), *signals, *v;
  const char *status, *sev, *rule, *entity, *at, *name, *respond;
  char vals[256] = "";
  size_t o = 0;

  if (!ev) return;
  status = json_string_value(json_object_get(ev, "status"));
  sev = json_string_value(json_object_get(ev, "severity"));
  rule = json_string_value(json_object_get(json_object_get(ev, "rule"), "id"));
  entity = json_string_value(json_object_get(ev, "entity"));
  at = json_string_value(json_object_get(ev, "event_time"));
  respond = json_string_value(json_object_get(ev, "respond"));
  signals = json_object_get(ev, "signals");
  json_object_foreach(signals, name, v) {
    if (o < sizeof(vals) - 1)
      o += (size_t)snprintf(vals + o, sizeof(vals) - o, "%s%s=%.0f", o ? " " : "", name,
                            json_number_value(json_object_get(v, "value")));
  }
  if (status && !strcmp(status, "opened")) counts[0]++;
  else if (status && !strcmp(status, "escalated")) counts[1]++;
  else if (status && !strcmp(status, "resolved")) counts[2]++;
  if (status && !strcmp(status, "postmortem")) {
    json_t *s = json_object_get(ev, "summary");
    printf("  %-10s %-5s %-26s %-10s lasted %.0f min, detected %.0f min after the first mention, "
           "%lld mentions, reach %lld\n",
           status, sev ? sev : "-", rule ? rule : "?", entity ? entity : "?",
           json_number_value(json_object_get(s, "duration_ms")) / 60000.0,
           json_number_value(json_object_get(s, "time_to_detect_ms")) / 60000.0,
           (long long)json_integer_value(json_object_get(s, "mentions")),
           (long long)json_integer_value(json_object_get(s, "reach")));
  } else {
    printf("  %-10s %-5s %-26s %-10s at %.19s  %s%s%s\n", status ? status : "?", sev ? sev : "-",
           rule ? rule : "?", entity ? entity : "?", at ? at : "?", vals,
           respond && status && !strcmp(status, "opened") ? "  -> " : "",
           respond && status && !strcmp(status, "opened") ? respond : "");
  }
  fflush(stdout);
  json_decref(ev);
}

static const char *default_rules_dir(void) {
  struct stat st;
  if (stat("rules", &st) == 0 && S_ISDIR(st.st_mode)) return "rules";
#ifdef FP_SOURCE_DIR
  if (stat(FP_SOURCE_DIR "/rules", &st) == 0) return FP_SOURCE_DIR "/rules";
#endif
  return "rules";
}

int fp_demo_main(int argc, char **argv) {
  const char *rules_dir = default_rules_dir();
  int use_memory = 0, brands = 8, hours = 4;
  char errstr[512], tmpdir[] = "/tmp/flashpoint-demo-XXXXXX", buf[64];
  rd_kafka_conf_t *kc;
  rd_kafka_t *mk = NULL, *prod = NULL, *cons = NULL;
  rd_kafka_mock_cluster_t *mc = NULL;
  pid_t redis_pid = -1;
  fp_conf_t *conf = NULL;
  fp_engine_t *engine = NULL;
  fp_gen_t *gen = NULL;
  fp_buf_t line = {0};
  uint64_t produced = 0;
  unsigned counts[3] = {0, 0, 0};
  pthread_t th;
  runner_t runner = {0};
  int rc = 1, started = 0;

  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--memory")) use_memory = 1;
    else if (!strcmp(argv[i], "--rules") && i + 1 < argc) rules_dir = argv[++i];
    else if (!strcmp(argv[i], "--brands") && i + 1 < argc) brands = (int)strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--hours") && i + 1 < argc) hours = (int)strtol(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "usage: flashpoint demo [--memory] [--rules DIR] [--brands N] [--hours H]\n");
      return 2;
    }
  }
  if (brands < 1 || brands > 100 || hours < 1 || hours > 48) {
    fprintf(stderr, "demo: --brands must be 1..100 and --hours 1..48\n");
    return 2;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  fp_log_setup(FP_LOG_WARN, 0);

  /* 1. the broker: librdkafka's mock cluster, inside this process */
  kc = rd_kafka_conf_new();
  rd_kafka_conf_set(kc, "log_level", "3", NULL, 0);
  if (!(mk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr)))) {
    rd_kafka_conf_destroy(kc); /* rd_kafka_new takes the conf only when it succeeds */
    fprintf(stderr, "demo: %s\n", errstr);
    goto out;
  }
  if (!(mc = rd_kafka_mock_cluster_new(mk, 1))) {
    fprintf(stderr, "demo: cannot create the mock cluster\n");
    goto out;
  }
  rd_kafka_mock_topic_create(mc, "mentions", DEMO_PARTS, 1);
  rd_kafka_mock_topic_create(mc, "incidents", 1, 1);
  rd_kafka_mock_topic_create(mc, "incidents.pager", 1, 1); /* the example pack pages sev1/sev2 */
  rd_kafka_mock_topic_create(mc, "mentions.dlq", 1, 1);

  /* 2. the state store */
  if (!use_memory) {
    int port = free_port();
    if (!mkdtemp(tmpdir) || port < 0 || (redis_pid = start_redis(port, tmpdir)) < 0) {
      fprintf(stderr, "demo: could not start redis-server (is it installed?); using the in-process "
                      "store instead (--memory)\n");
      use_memory = 1;
    } else {
      snprintf(buf, sizeof(buf), "%d", port);
    }
  }

  /* 3. the input: generated mentions with two injected crises */
  {
    int64_t start = fp_now_ms() - (int64_t)hours * 3600 * 1000;
    fp_gen_crisis_t crises[2] = {
        {FP_CRISIS_SLOW_BURN, 1, start + (int64_t)hours * 3600 * 1000 / 2, 40 * 60 * 1000, 60},
        {FP_CRISIS_BOT_BURST, 3, start + (int64_t)hours * 3600 * 1000 * 3 / 4, 15 * 60 * 1000, 40},
    };
    fp_gen_conf_t gc = {42, brands, start, (int64_t)hours * 3600 * 1000, 20, 5000, 0.01, 2, crises, "demo"};
    const char *key;
    int crisis;

    kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc), NULL, 0);
    rd_kafka_conf_set(kc, "linger.ms", "20", NULL, 0);
    /* the mock keeps a few MB per partition and drops the oldest batches beyond that; at
     * some hours of the day the uncompressed stream was more, and the demo waited for
     * mentions that were gone */
    rd_kafka_conf_set(kc, "compression.type", "lz4", NULL, 0);
    if (!(prod = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr)))) {
      rd_kafka_conf_destroy(kc);
      fprintf(stderr, "demo: %s\n", errstr);
      goto out;
    }
    gen = fp_gen_new(&gc);
    printf("Flashpoint demo: %d brands, %d h of mentions (a slow-burn crisis on %s, a bot burst on %s)\n",
           brands, hours, fp_gen_brand(gen, 1), fp_gen_brand(gen, 3 % brands));
    while (fp_gen_next(gen, &line, &key, &crisis)) {
      while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("mentions"), RD_KAFKA_V_KEY(key, strlen(key)),
                               RD_KAFKA_V_VALUE(line.data, line.len),
                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) ==
             RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(prod, 10);
      produced++;
    }
    /* and a few malformed messages, which must end in the dead-letter topic */
    static const char *const bad[] = {"{not json", "{\"id\":\"x\"}", "[1,2,3]"};
    for (size_t i = 0; i < 3; i++)
      rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("mentions"), RD_KAFKA_V_VALUE((void *)bad[i], strlen(bad[i])),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    produced += 3;
    rd_kafka_flush(prod, 30000);
    printf("produced %llu mentions to the embedded broker at %s\n", (unsigned long long)produced,
           rd_kafka_mock_cluster_bootstraps(mc));
    /* what the mock still holds is what the engine can read: wait for that, not for more */
    unsigned long long dropped = 0;
    for (int p = 0; p < DEMO_PARTS; p++) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(prod, "mentions", p, &lo, &hi, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        dropped += (unsigned long long)lo;
    }
    if (dropped) {
      printf("demo: the embedded broker dropped the oldest %llu (it keeps a few MB per partition)\n", dropped);
      produced -= dropped < produced ? dropped : produced;
    }
  }

  /* 4. the engine */
  conf = fp_conf_new();
  if (fp_conf_set(conf, "kafka.bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc), errstr, sizeof(errstr)) ||
      fp_conf_set(conf, "rules.dir", rules_dir, errstr, sizeof(errstr)) ||
      fp_conf_set(conf, "group.id", "flashpoint-demo", errstr, sizeof(errstr)) ||
      fp_conf_set(conf, "log.level", "warn", errstr, sizeof(errstr)) ||
      fp_conf_set(conf, "store.backend", use_memory ? "memory" : "redis", errstr, sizeof(errstr)) ||
      fp_conf_set(conf, "workers", use_memory ? "1" : "2", errstr, sizeof(errstr)) ||
      (!use_memory && fp_conf_set(conf, "redis.port", buf, errstr, sizeof(errstr))) ||
      fp_conf_set(conf, "kafka.log_level", "3", errstr, sizeof(errstr))) {
    fprintf(stderr, "demo: %s\n", errstr);
    goto out;
  }
  if (!(engine = fp_engine_new(conf, errstr, sizeof(errstr)))) {
    fprintf(stderr, "demo: %s\n", errstr);
    goto out;
  }
  runner.engine = engine;
  if (pthread_create(&th, NULL, engine_thread, &runner) != 0) goto out;
  started = 1;
  printf("engine running with rules from %s; incidents as they happen:\n", rules_dir);

  /* 5. print the incidents as the engine emits them */
  kc = rd_kafka_conf_new();
  rd_kafka_conf_set(kc, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc), NULL, 0);
  rd_kafka_conf_set(kc, "group.id", "flashpoint-demo-printer", NULL, 0);
  rd_kafka_conf_set(kc, "auto.offset.reset", "earliest", NULL, 0);
  if (!(cons = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr)))) {
    rd_kafka_conf_destroy(kc);
    fprintf(stderr, "demo: %s\n", errstr);
    goto out;
  }
  {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(l, "incidents", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_topic_partition_list_add(l, "incidents.pager", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(cons, l);
    rd_kafka_topic_partition_list_destroy(l);
  }
  {
    int64_t idle_since = fp_mono_ns(), deadline = fp_mono_ns() + 300LL * 1000000000LL;
    fp_stats_t st;
    while (!demo_interrupted && fp_mono_ns() < deadline) {
      rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
      if (m) {
        if (!m->err) print_incident(m->payload, m->len, counts); /* incidents and the pager */
        rd_kafka_message_destroy(m);
        idle_since = fp_mono_ns();
        continue;
      }
      fp_engine_stats(engine, &st);
      if (st.mentions_in >= produced && fp_mono_ns() - idle_since > 2000000000LL) break;
    }
    fp_engine_stop(engine);
    pthread_join(th, NULL);
    started = 0;
    fp_engine_stats(engine, &st);
    printf("\nprocessed %llu mentions (%llu dead-lettered, %llu late), %llu rule evaluations, "
           "%llu incident events (%u opened, %u escalated, %u resolved), %llu state-store round trips\n",
           (unsigned long long)st.mentions_in, (unsigned long long)st.dead_lettered,
           (unsigned long long)st.late, (unsigned long long)st.rule_evals,
           (unsigned long long)st.incidents, counts[0], counts[1], counts[2],
           (unsigned long long)st.redis_roundtrips);
    rc = counts[0] > 0 && runner.result == FP_OK ? 0 : 1;
    if (counts[0] == 0) printf("demo: no incident was opened - check the rules in %s\n", rules_dir);
  }

out:
  if (started) {
    fp_engine_stop(engine);
    pthread_join(th, NULL);
  }
  fp_engine_destroy(engine);
  fp_conf_destroy(conf);
  if (cons) {
    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
  }
  if (prod) rd_kafka_destroy(prod);
  fp_gen_destroy(gen);
  fp_buf_free(&line);
  if (mc) rd_kafka_mock_cluster_destroy(mc);
  if (mk) rd_kafka_destroy(mk);
  if (redis_pid > 0) {
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
  }
  if (tmpdir[sizeof(tmpdir) - 7] != 'X') rmdir(tmpdir); /* mkdtemp filled it; redis wrote nothing */
  return rc;
}

/* Unit: an engine holds a producer handle for every output topic from the start (the first
 * message to a topic the producer has not seen waits for its metadata: the first incident
 * would be late). No broker is needed: handles are made without connecting. */
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "engine_int.h"
#include "testlib.h"

static int holds(const fp_engine_t *e, const char *name) {
  for (size_t i = 0; i < e->n_out_topics; i++)
    if (!strcmp(rd_kafka_topic_name(e->out_topics[i]), name)) return 1;
  return 0;
}

static void test_output_topics_warm(void) {
  fp_conf_t *c = fp_conf_new();
  char err[512], dir[512];
  snprintf(dir, sizeof(dir), "%s/rules", FP_SOURCE_DIR);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "rules.dir", dir, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "store.backend", "memory", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "workers", "1", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "kafka.bootstrap.servers", "127.0.0.1:1", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "output.topic", "alerts", err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(fp_conf_set(c, "dlq.topic", "bad-mentions", err, sizeof(err)), FP_OK);
  fp_engine_t *e = fp_engine_new(c, err, sizeof(err));
  if (FPT_CHECK(e != NULL, "engine: %s", err)) {
    /* the default, the dead-letter topic and what the example rules route to */
    FPT_CHECK(holds(e, "alerts"), "default output topic held");
    FPT_CHECK(holds(e, "bad-mentions"), "dead-letter topic held");
    FPT_CHECK(holds(e, "incidents"), "a rule's default topic held");
    FPT_CHECK(holds(e, "incidents.pager"), "a rule's sev1 topic held");
    FPT_CHECK_EQ_INT(e->n_out_topics, 4); /* each once */
    fp_engine_destroy(e);
  }
  fp_conf_destroy(c);
}

int main(void) {
  fpt_run("output topics warm from the start", test_output_topics_warm);
  return fpt_done();
}

/*
 * err.c - the sentences and tokens behind fp_err_t. The token (fp_err_name) is what goes
 * into dead-letter headers and metric labels, so it never changes once published.
 */
#include "flashpoint/flashpoint.h"

static const struct {
  const char *name, *text;
} fp_errs[FP_ERR__COUNT] = {
    [FP_OK] = {"ok", "success"},
    [FP_ERR_INVALID_ARG] = {"invalid_arg", "invalid argument"},
    [FP_ERR_NOMEM] = {"nomem", "out of memory"},
    [FP_ERR_CONFIG] = {"config", "invalid configuration value"},
    [FP_ERR_UNKNOWN_KEY] = {"unknown_key", "unknown configuration key"},
    [FP_ERR_IO] = {"io", "input/output error"},
    [FP_ERR_KAFKA] = {"kafka", "Kafka error"},
    [FP_ERR_REDIS] = {"redis", "Redis unavailable or failing (retriable)"},
    [FP_ERR_REDIS_FATAL] = {"redis_fatal", "Redis refused the engine (auth, memory, read-only)"},
    [FP_ERR_RULE_LOAD] = {"rule_load", "rule failed to load"},
    [FP_ERR_RULE_RUNTIME] = {"rule_runtime", "rule raised an error"},
    [FP_ERR_RULE_BUDGET] = {"rule_budget", "rule exceeded its instruction or time budget"},
    [FP_ERR_RULE_MEMORY] = {"rule_memory", "rule exceeded its memory cap"},
    [FP_ERR_DECODE] = {"decode", "message is not valid JSON"},
    [FP_ERR_SCHEMA] = {"schema", "mention does not match the schema"},
    [FP_ERR_TOO_LARGE] = {"too_large", "message larger than input.max.bytes"},
    [FP_ERR_LATE] = {"late", "mention later than the allowed lateness"},
    [FP_ERR_TIMEOUT] = {"timeout", "operation timed out"},
    [FP_ERR_STATE] = {"state", "operation not valid in the current state"},
    [FP_ERR_FATAL] = {"fatal", "fatal error"},
    [FP_ERR_STORE_LOST] = {"store_lost", "the state store lost data (no fence for a partition with committed offsets)"},
};

const char *fp_err2str(fp_err_t err) {
  if ((int)err < 0 || err >= FP_ERR__COUNT) return "unknown error";
  return fp_errs[err].text;
}

const char *fp_err_name(fp_err_t err) {
  if ((int)err < 0 || err >= FP_ERR__COUNT) return "unknown";
  return fp_errs[err].name;
}

/*
 * log.h - levelled, facility-tagged logging for every module.
 *
 * fp_log() checks the level before formatting, so a disabled debug line costs one compare.
 * Lines go to stderr, as text ("2026-11-25T10:00:00.123Z WARN  window: ...") or as JSON lines
 * when log.format=json. Nothing in the engine logs once per mention at info or above: per-event
 * problems are counted and logged once (see fp_log_once).
 */
#ifndef FP_LOG_H
#define FP_LOG_H

#include <stdatomic.h>

typedef enum { FP_LOG_DEBUG = 0, FP_LOG_INFO, FP_LOG_WARN, FP_LOG_ERROR, FP_LOG_OFF } fp_log_level_t;

extern _Atomic int fp_log_level_current;

/** Sets the threshold and the format (json != 0: JSON lines). Thread-safe. */
void fp_log_setup(fp_log_level_t level, int json);
/** @returns the level named by @p name ("debug", "info", ...), or -1. */
int fp_log_level_parse(const char *name);

void fp_log_write(fp_log_level_t level, const char *facility, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fp_log(level, facility, ...)                                                          \
  do {                                                                                       \
    if ((int)(level) >= atomic_load_explicit(&fp_log_level_current, memory_order_relaxed))   \
      fp_log_write((level), (facility), __VA_ARGS__);                                        \
  } while (0)

/** Logs at most once per call site: the flag is a static at the site. */
#define fp_log_once(level, facility, ...)                                                     \
  do {                                                                                       \
    static atomic_flag fp__once_ = ATOMIC_FLAG_INIT;                                         \
    if (!atomic_flag_test_and_set(&fp__once_)) fp_log((level), (facility), __VA_ARGS__);     \
  } while (0)

#endif

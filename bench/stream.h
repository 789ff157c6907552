/*
 * stream.h - the benchmark stream, shared by fpbench.c and soak.c so that the benchmarks and
 * the soak send the same mentions: engine/gen.h with 200 brands at 300 mentions/min each
 * (1000/s of event time), 50k authors, 1% out of order, and crises so that every rule of the
 * example pack fires.
 */
#ifndef FP_BENCH_STREAM_H
#define FP_BENCH_STREAM_H

#include <stdint.h>

#include "gen.h"

#define BENCH_T0_MS 1764000000000LL

/** @returns a generator of the benchmark stream (owned: fp_gen_destroy), NULL on failure.
 * @p id_prefix is borrowed for the generator's life. */
static inline fp_gen_t *bench_stream_new(uint64_t seed, const char *id_prefix) {
  static const fp_gen_crisis_t crises[] = {
      {FP_CRISIS_SLOW_BURN, 3, BENCH_T0_MS + 120000, 900000, 900},
      {FP_CRISIS_FLASH_VIRAL, 7, BENCH_T0_MS + 60000, 600000, 1200},
      {FP_CRISIS_BOT_BURST, 11, BENCH_T0_MS + 200000, 300000, 600},
      {FP_CRISIS_SLOW_BURN, 42, BENCH_T0_MS + 400000, 1200000, 1500},
  };
  fp_gen_conf_t c = {0};
  c.seed = seed;
  c.brands = 200;
  c.start_ms = BENCH_T0_MS;
  c.duration_ms = 365LL * 86400000;
  c.base_per_min = 300;
  c.authors = 50000;
  c.out_of_order = 0.01;
  c.ncrises = sizeof(crises) / sizeof(crises[0]);
  c.crises = crises;
  c.id_prefix = id_prefix;
  return fp_gen_new(&c);
}

#endif

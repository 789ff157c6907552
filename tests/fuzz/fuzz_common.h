/*
 * fuzz_common.h - shared helpers of the libFuzzer harnesses in tests/fuzz/: a byte reader
 * that turns the fuzz input into typed values (never reads past the end; an exhausted reader
 * yields zeros), a check macro that aborts with a message (libFuzzer reports abort() as a
 * crash and saves the input), and the switch that masks findings already reported.
 *
* FP_FUZZ_MASK_KNOWN=1 (or a list such as F1,F3) in the environment makes the harnesses steer around bugs already
 * reported to the lead (tests/fuzz/README.md lists them), so a long exploratory run keeps
 * looking for new ones. CI runs without it: the regression seeds must pass unmasked.
 */
#ifndef FP_FUZZ_COMMON_H
#define FP_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  size_t n;
} fz_t;

static inline uint8_t fz_u8(fz_t *f) {
  if (!f->n) return 0;
  f->n--;
  return *f->p++;
}
static inline uint16_t fz_u16(fz_t *f) { return (uint16_t)(fz_u8(f) | fz_u8(f) << 8); }
static inline uint32_t fz_u32(fz_t *f) { return (uint32_t)fz_u16(f) | (uint32_t)fz_u16(f) << 16; }
static inline uint64_t fz_u64(fz_t *f) { return (uint64_t)fz_u32(f) | (uint64_t)fz_u32(f) << 32; }
/* A value in [lo, hi] (inclusive). */
static inline int64_t fz_range(fz_t *f, int64_t lo, int64_t hi) {
  uint64_t span = (uint64_t)hi - (uint64_t)lo;
  uint64_t v = fz_u64(f);
  if (span == UINT64_MAX) return (int64_t)v;
  return (int64_t)((uint64_t)lo + v % (span + 1));
}
static inline double fz_double(fz_t *f) {
  uint64_t b = fz_u64(f);
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}
/* Up to @p max bytes, length-prefixed; copied NUL-terminated into @p out (size max + 1). */
static inline size_t fz_bytes(fz_t *f, char *out, size_t max) {
  size_t len = fz_u8(f) % (max + 1), i;
  for (i = 0; i < len && f->n; i++) out[i] = (char)fz_u8(f);
  out[i] = '\0';
  for (size_t k = 0; k < i; k++) /* NUL cannot occur in a C string the engine receives */
    if (!out[k]) out[k] = ' ';
  return i;
}

/* Rewrites every byte of an invalid UTF-8 sequence as '?' (strict: no overlongs,
 * surrogates or code points above U+10FFFF), so the string is what jansson accepts. */
static inline void fz_utf8_fix(char *s) {
  unsigned char *u = (unsigned char *)s;
  size_t i = 0, n = strlen(s);
  while (i < n) {
    unsigned c = u[i];
    size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    int ok = k > 0 && i + k <= n;
    uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
    for (size_t j = 1; ok && j < k; j++) {
      if ((u[i + j] & 0xC0) != 0x80) ok = 0;
      else cp = cp << 6 | (u[i + j] & 0x3F);
    }
    if (ok && ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
               cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = 0;
    if (!ok) {
      u[i++] = '?';
      continue;
    }
    i += k;
  }
}

/* @returns nonzero when finding @p id ("F1", ...) is to be masked: FP_FUZZ_MASK_KNOWN is
 * "1" or "all" (every known finding) or a list naming it ("F1,F3"). */
static inline int fz_mask_known(const char *id) {
  const char *e = getenv("FP_FUZZ_MASK_KNOWN");
  if (!e || !*e || !strcmp(e, "0")) return 0;
  if (!strcmp(e, "1") || !strcmp(e, "all")) return 1;
  return strstr(e, id) != NULL;
}

#define FZ_CHECK(cond, ...)                                                                   \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
      fprintf(stderr, __VA_ARGS__);                                                          \
      fputc('\n', stderr);                                                                   \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

#endif

/*
 * util.c - clocks, duration and timestamp parsing, FNV hashing, a growable buffer.
 * All parsers are strict: the whole input must be consumed, or the call fails.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t fp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fp_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t fp_mono_coarse_ns(int64_t *res_ns) {
  static _Atomic int64_t res; /* the clock's resolution, read once */
  struct timespec ts;
  if (res_ns) {
    int64_t r = atomic_load_explicit(&res, memory_order_relaxed);
    if (!r) {
      if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0) r = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
      if (r <= 0) r = 10000000; /* unknown: assume 10 ms */
      atomic_store_explicit(&res, r, memory_order_relaxed);
    }
    *res_ns = r;
  }
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

fp_err_t fp_duration_parse(const char *s, int64_t *ms_out) {
  char *end;
  double v;
  int64_t mult;

  if (!s || !*s || isspace((unsigned char)*s)) return FP_ERR_CONFIG;
  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || !isfinite(v) || v < 0) return FP_ERR_CONFIG;
  if (!*end || strcmp(end, "ms") == 0) mult = 1;
  else if (strcmp(end, "s") == 0) mult = 1000;
  else if (strcmp(end, "m") == 0) mult = 60 * 1000;
  else if (strcmp(end, "h") == 0) mult = 3600 * 1000;
  else if (strcmp(end, "d") == 0) mult = 86400 * 1000;
  else if (strcmp(end, "w") == 0) mult = 7 * 86400 * 1000LL;
  else return FP_ERR_CONFIG;
  if (v * (double)mult > 9.0e15) return FP_ERR_CONFIG;
  *ms_out = (int64_t)llround(v * (double)mult);
  return FP_OK;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Hinnant's algorithm). */
int64_t fp_days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int fp_parse_digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

fp_err_t fp_time_parse_rfc3339(const char *s, int64_t *ms_out) {
  int y, mo, d, h, mi, sec, ms = 0, off = 0;
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

  if (!s || strlen(s) < 20) return FP_ERR_SCHEMA;
  if (fp_parse_digits(s, 4, &y) || s[4] != '-' || fp_parse_digits(s + 5, 2, &mo) || s[7] != '-' ||
      fp_parse_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      fp_parse_digits(s + 11, 2, &h) || s[13] != ':' || fp_parse_digits(s + 14, 2, &mi) || s[16] != ':' ||
      fp_parse_digits(s + 17, 2, &sec))
    return FP_ERR_SCHEMA;
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
    return FP_ERR_SCHEMA;
  s += 19;
  if (*s == '.') {
    int nd = 0;
    s++;
    while (isdigit((unsigned char)*s)) {
      if (nd < 3) ms = ms * 10 + (*s - '0');
      nd++, s++;
    }
    if (nd == 0) return FP_ERR_SCHEMA;
    for (; nd < 3; nd++) ms *= 10;
  }
  if (*s == 'Z' || *s == 'z') s++;
  else if (*s == '+' || *s == '-') {
    int oh, om, sign = *s == '-' ? -1 : 1;
    if (fp_parse_digits(s + 1, 2, &oh) || s[3] != ':' || fp_parse_digits(s + 4, 2, &om) || oh > 23 || om > 59)
      return FP_ERR_SCHEMA;
    off = sign * (oh * 60 + om);
    s += 6;
  } else
    return FP_ERR_SCHEMA;
  if (*s) return FP_ERR_SCHEMA;
  *ms_out = ((fp_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - off * 60) * 1000 + ms;
  return FP_OK;
}

void fp_time_format(int64_t ms, char *buf, size_t size) {
  time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = (int)(ms - (int64_t)secs * 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

uint64_t fp_fnv1a(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

fp_err_t fp_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) {
  char *end;
  long long v;
  if (!s || !*s || isspace((unsigned char)*s)) return FP_ERR_CONFIG;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno || *end || v < min || v > max) return FP_ERR_CONFIG;
  *out = v;
  return FP_OK;
}

fp_err_t fp_parse_double(const char *s, double *out) {
  char *end;
  double v;
  if (!s || !*s || isspace((unsigned char)*s)) return FP_ERR_CONFIG;
  errno = 0;
  v = strtod(s, &end);
  if (errno || *end || !isfinite(v)) return FP_ERR_CONFIG;
  *out = v;
  return FP_OK;
}

size_t fp_fmt_u64(char *d, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) d[i] = tmp[n - 1 - i];
  return n;
}

fp_err_t fp_buf_append(fp_buf_t *b, const void *data, size_t len) {
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + len + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return FP_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return FP_OK;
}

fp_err_t fp_buf_printf(fp_buf_t *b, const char *fmt, ...) {
  va_list ap;
  char tmp[512];
  int n;
  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0) return FP_ERR_INVALID_ARG;
  if ((size_t)n < sizeof(tmp)) return fp_buf_append(b, tmp, (size_t)n);
  char *big = malloc((size_t)n + 1);
  if (!big) return FP_ERR_NOMEM;
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  fp_err_t err = fp_buf_append(b, big, (size_t)n);
  free(big);
  return err;
}

void fp_buf_reset(fp_buf_t *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void fp_buf_free(fp_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

fp_err_t fp_seterr(char *errstr, size_t size, fp_err_t err, const char *fmt, ...) {
  if (errstr && size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
  }
  return err;
}

int fp_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str, *e = s + len;
  while (s < e) {
    unsigned c = *s;
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      s++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) n = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 3, cp = c & 0x07;
    else return 0;
    if ((size_t)(e - s) <= n) return 0;
    for (size_t i = 1; i <= n; i++) {
      if ((s[i] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      return 0;
    s += n + 1;
  }
  return 1;
}

int64_t fp_add_sat(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
  return a + b;
}

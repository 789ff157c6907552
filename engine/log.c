/*
 * log.c - owns the log threshold and format. One write(2)-sized line per call so lines
 * from several threads never interleave mid-line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int fp_log_level_current = FP_LOG_INFO;
static _Atomic int fp_log_json = 0;

static const char *const fp_level_names[] = {"debug", "info", "warn", "error", "off"};

void fp_log_setup(fp_log_level_t level, int json) {
  atomic_store(&fp_log_level_current, (int)level);
  atomic_store(&fp_log_json, json);
}

int fp_log_level_parse(const char *name) {
  for (int i = 0; i <= FP_LOG_OFF; i++)
    if (name && strcasecmp(name, fp_level_names[i]) == 0) return i;
  return -1;
}

/* Escapes @p s as a JSON string body into @p out (always terminated). */
static size_t json_escape(char *out, size_t size, const char *s) {
  size_t o = 0;
  for (; *s && o + 7 < size; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
    else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
    else if (c < 0x20) o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
    else out[o++] = (char)c;
  }
  out[o] = '\0';
  return o;
}

void fp_log_write(fp_log_level_t level, const char *facility, const char *fmt, ...) {
  char msg[1024], line[2400], ts[32];
  struct timespec now;
  struct tm tm;
  va_list ap;
  int n;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  n = (int)strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof(ts) - (size_t)n, ".%03ldZ", now.tv_nsec / 1000000);
  if ((unsigned)level > FP_LOG_OFF) level = FP_LOG_ERROR;

  if (atomic_load(&fp_log_json)) {
    char emsg[2048], efac[64];
    json_escape(emsg, sizeof(emsg), msg);
    json_escape(efac, sizeof(efac), facility ? facility : "");
    n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"facility\":\"%s\",\"msg\":\"%s\"}\n",
                 ts, fp_level_names[level], efac, emsg);
  } else {
    char up[8];
    size_t i;
    for (i = 0; fp_level_names[level][i] && i < sizeof(up) - 1; i++)
      up[i] = (char)(fp_level_names[level][i] - 32);
    up[i] = '\0';
    n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", ts, up, facility ? facility : "-", msg);
  }
  if (n < 0) return;
  if ((size_t)n >= sizeof(line)) n = (int)sizeof(line) - 1;
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

/*
 * test_report.c - `flashpoint report`: a replay of a generated stream with a flash-viral
 * and a slow-burn crisis becomes one self-contained HTML page (no external resource), which
 * headless Chromium renders to a PNG. The PNG is decoded (zlib) and must show the chart
 * lines (blue mentions, red negatives) and an incident marker (a severity colour, drawn with
 * crisp edges so its exact colour survives). Chromium missing is a failure, not a skip:
 * tests/harness/setup.sh installs it. The screenshot path is printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef FP_HAVE_ZLIB
#include <zlib.h>
#endif

#include "testlib.h"

#define RULES FP_SOURCE_DIR "/rules"
#define BIN FP_BINARY_DIR "/flashpoint"

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c) {
  int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

typedef struct {
  long colours, blue, red, marker;
  uint32_t w, h;
} pngstat_t;

/* Decodes an 8-bit RGB/RGBA PNG and counts what the test needs. @returns 0 or -1. */
static int png_scan(const unsigned char *d, size_t n, pngstat_t *st) {
#ifdef FP_HAVE_ZLIB
  unsigned char *idat = NULL, *raw = NULL;
  size_t ni = 0, pos = 8;
  int bpp, ctype, rc = -1;
  memset(st, 0, sizeof *st);
  if (n < 33 || memcmp(d, "\x89PNG\r\n\x1a\n", 8) || memcmp(d + 12, "IHDR", 4)) return -1;
  st->w = be32(d + 16);
  st->h = be32(d + 20);
  ctype = d[25];
  if (d[24] != 8 || (ctype != 2 && ctype != 6) || d[28] != 0) return -1;
  bpp = ctype == 6 ? 4 : 3;
  while (pos + 12 <= n) {
    uint32_t len = be32(d + pos);
    if (pos + 12 + len > n) break;
    if (!memcmp(d + pos + 4, "IDAT", 4)) {
      unsigned char *q = realloc(idat, ni + len);
      if (!q) goto out;
      idat = q;
      memcpy(idat + ni, d + pos + 8, len);
      ni += len;
    }
    pos += 12 + len;
  }
  size_t stride = (size_t)st->w * bpp;
  uLongf rawlen = (uLongf)((stride + 1) * st->h);
  if (!(raw = malloc(rawlen)) || uncompress(raw, &rawlen, idat, ni) != Z_OK || rawlen != (stride + 1) * st->h) goto out;
  /* unfilter in place */
  for (uint32_t y = 0; y < st->h; y++) {
    unsigned char *row = raw + y * (stride + 1), *line = row + 1, *prev = y ? raw + (y - 1) * (stride + 1) + 1 : NULL;
    for (size_t x = 0; x < stride; x++) {
      int a = x >= (size_t)bpp ? line[x - bpp] : 0, b = prev ? prev[x] : 0, c = prev && x >= (size_t)bpp ? prev[x - bpp] : 0;
      switch (row[0]) {
      case 0: break;
      case 1: line[x] = (unsigned char)(line[x] + a); break;
      case 2: line[x] = (unsigned char)(line[x] + b); break;
      case 3: line[x] = (unsigned char)(line[x] + (a + b) / 2); break;
      case 4: line[x] = (unsigned char)(line[x] + paeth(a, b, c)); break;
      default: goto out;
      }
    }
  }
  {
    static unsigned char seen[1 << 21]; /* 2^24 colours as bits */
    memset(seen, 0, sizeof seen);
    for (uint32_t y = 0; y < st->h; y++)
      for (uint32_t x = 0; x < st->w; x++) {
        const unsigned char *p = raw + y * (stride + 1) + 1 + (size_t)x * bpp;
        uint32_t rgb = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        if (!(seen[rgb >> 3] & (1 << (rgb & 7)))) {
          seen[rgb >> 3] |= (unsigned char)(1 << (rgb & 7));
          st->colours++;
        }
        if (p[2] > 150 && p[0] < 110 && p[1] > 80 && p[1] < 160) st->blue++;     /* #1c7ed6 and its antialiasing */
        if (p[0] > 180 && p[1] < 90 && p[2] < 90) st->red++;                     /* #e03131 */
        if (rgb == 0x7048e8 || rgb == 0xf59f00 || rgb == 0xe8590c || rgb == 0xc2255c) st->marker++;
      }
  }
  rc = 0;
out:
  free(idat);
  free(raw);
  return rc;
#else
  (void)d, (void)n, (void)st;
  return -1;
#endif
}

static void t_report(void) {
  char *dir = fpt_tmpdir("report"), in[512], truth[512], html[512], png[512], prof[512], url[600], shot[600];
  if (!dir) return;
  snprintf(in, sizeof in, "%s/stream.jsonl", dir);
  snprintf(truth, sizeof truth, "%s/stream.jsonl.truth.json", dir);
  snprintf(html, sizeof html, "%s/report.html", dir);
  snprintf(png, sizeof png, "%s/report.png", dir);
  snprintf(prof, sizeof prof, "%s/chromium-profile", dir);

  const char *gen[] = {BIN, "generate", "--brands", "4", "--hours", "4", "--seed", "3", "--crisis", "flash_viral:1:160:30:40",
                       "--crisis", "slow_burn:1:130:60:30", "--truth", truth, "--out", in, NULL};
  fpt_proc_t *p = fpt_proc_spawn(gen, NULL, NULL);
  if (!FPT_CHECK_EQ_INT(fpt_proc_wait(p, 120000), 0)) fpt_proc_dump_log(p, 20);
  fpt_proc_free(p);
  const char *rep[] = {BIN, "report", "--rules", RULES, "--title", "report test", "--out", html, in, NULL};
  p = fpt_proc_spawn(rep, NULL, NULL);
  if (!FPT_CHECK_EQ_INT(fpt_proc_wait(p, 300000), 0)) fpt_proc_dump_log(p, 20);
  fpt_proc_free(p);

  size_t len = 0;
  char *page = fpt_read_file(html, &len);
  if (!FPT_CHECK(page != NULL && len > 10000, "report written (%zu bytes)", len)) goto out;
  FPT_CHECK(strstr(page, "<svg") && strstr(page, "<polyline"), "inline SVG chart");
  FPT_CHECK(strstr(page, "sev") && strstr(page, "opened"), "incident markers");
  FPT_CHECK(strstr(page, "truth: flash_viral") != NULL, "ground truth shaded");
  FPT_CHECK(strstr(page, "<table>") && strstr(page, "most_reached"), "sample mentions table");
  FPT_CHECK(!strstr(page, "src=\"http") && !strstr(page, "href=\"http") && !strstr(page, "<link") && !strstr(page, "@import"),
            "no external resources");
  free(page);

  /* render it */
  snprintf(url, sizeof url, "file://%s", html);
  snprintf(shot, sizeof shot, "--screenshot=%s", png);
  char udd[600];
  snprintf(udd, sizeof udd, "--user-data-dir=%s", prof);
  const char *chrome[] = {"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync", udd, shot,
                          "--window-size=1400,1000", "--hide-scrollbars", url, NULL};
  p = fpt_proc_spawn(chrome, NULL, NULL);
  if (!FPT_CHECK(p != NULL, "chromium starts (is it installed? tests/harness/setup.sh installs it)")) goto out;
  int rc = fpt_proc_wait(p, 180000);
  if (rc == -1) rc = fpt_proc_kill(p);
  if (!FPT_CHECK_EQ_INT(rc, 0)) fpt_proc_dump_log(p, 30);
  fpt_proc_free(p);
  unsigned char *img = (unsigned char *)fpt_read_file(png, &len);
  fprintf(stderr, "screenshot: %s (%zu bytes)\n", png, len);
  if (!FPT_CHECK(img != NULL && len > 20000, "screenshot is a non-trivial file (%zu bytes)", len)) {
    free(img);
    goto out;
  }
  pngstat_t st;
  if (FPT_CHECK(png_scan(img, len, &st) == 0, "screenshot decodes as a PNG")) {
    fpt_note("%ux%u, %ld colours, %ld blue, %ld red, %ld marker pixels", st.w, st.h, st.colours, st.blue, st.red, st.marker);
    FPT_CHECK(st.w == 1400 && st.h == 1000, "window size");
    FPT_CHECK(st.colours > 20, "not a blank page (%ld colours)", st.colours);
    FPT_CHECK(st.blue > 300, "mention rate line visible (%ld px)", st.blue);
    FPT_CHECK(st.red > 100, "negative rate line visible (%ld px)", st.red);
    FPT_CHECK(st.marker > 200, "incident markers visible (%ld px)", st.marker);
  }
  free(img);
out:
  free(dir);
}

int main(void) {
  fpt_run("html report rendered by headless chromium", t_report);
  return fpt_done();
}

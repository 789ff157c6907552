/*
 * watch.c - owns the rules-directory watcher: an inotify descriptor on the rules directory
 * (and its lib/ folder), a thread that polls it together with a stop pipe, and the debounce.
 *
 * How it works: the thread blocks in poll(). Each relevant event (see watch.h) moves the
 * deadline to now + FP_WATCH_DEBOUNCE_MS, capped at FP_WATCH_MAX_DELAY_MS after the first
 * event of the burst; when poll() times out at the deadline, on_change runs once. Deploying a
 * file by writing it in place produces several events (create, modify, close); by rename, one
 * (moved_to): either way one callback. If lib/ is created after start it is added; if it is
 * removed its watch goes away by itself (IN_IGNORED). The directory itself disappearing
 * (IN_DELETE_SELF/IN_MOVE_SELF) is reported once as a change; the reload then fails and says
 * why, and the running rules stay.
 * Invariant kept by callers: on_change is quick (it only sets flags) and fp_watch_destroy is
 * called once, from another thread than the watcher's.
 */
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "flashpoint/flashpoint.h"
#include "log.h"
#include "util.h"

#define WATCH_MASK                                                                            \
  (IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |         \
   IN_DELETE_SELF | IN_MOVE_SELF)

struct fp_watch_s {
  char *dir;
  int fd;          /* inotify */
  int stop[2];     /* pipe: a byte written to stop[1] ends the thread */
  int wd_dir, wd_lib;
  void (*on_change)(void *);
  void *arg;
  pthread_t thread;
  int started;
};

static int ends_with(const char *s, size_t n, const char *suffix) {
  size_t m = strlen(suffix);
  return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Does an event on @p name count as a change of the rule set? */
static int relevant(const char *name) {
  size_t n = strlen(name);
  if (n >= 2 && name[0] == '.' && name[1] == '.') return 1; /* ConfigMap ..data swaps */
  if (n && name[0] == '.') return 0;                      /* hidden and editor files */
  return ends_with(name, n, ".lua");
}

static void add_lib(fp_watch_t *w) {
  char path[4096];
  snprintf(path, sizeof path, "%s/lib", w->dir);
  w->wd_lib = inotify_add_watch(w->fd, path, WATCH_MASK | IN_ONLYDIR);
}

/* Reads the pending events; @returns 1 if one of them counts. */
static int drain(fp_watch_t *w) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  int changed = 0;
  for (;;) {
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n <= 0) break; /* EAGAIN: nothing more for now */
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      const char *name = ev->len ? ev->name : "";
      if (ev->mask & IN_Q_OVERFLOW) {
        changed = 1; /* lost events: assume a change */
      } else if (ev->mask & IN_IGNORED) {
        if (ev->wd == w->wd_lib) w->wd_lib = -1;
      } else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        if (ev->wd == w->wd_dir) changed = 1;
      } else if (ev->wd == w->wd_dir && (ev->mask & IN_ISDIR) && strcmp(name, "lib") == 0) {
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) add_lib(w);
        changed = 1;
      } else if (relevant(name)) {
        changed = 1;
      }
    }
  }
  return changed;
}

static void *watch_main(void *arg) {
  fp_watch_t *w = arg;
  int64_t first = 0, due = 0; /* ms on the monotonic clock; 0: nothing pending */
  for (;;) {
    struct pollfd pf[2] = {{w->fd, POLLIN, 0}, {w->stop[0], POLLIN, 0}};
    int timeout = -1;
    if (due) {
      int64_t left = due - fp_mono_ns() / 1000000;
      timeout = left > 0 ? (int)left : 0;
    }
    int rc = poll(pf, 2, timeout);
    if (rc < 0 && errno != EINTR) {
      fp_log(FP_LOG_ERROR, "rules", "watching %s stopped: poll: %s", w->dir, strerror(errno));
      return NULL;
    }
    if (pf[1].revents) return NULL;
    int64_t now = fp_mono_ns() / 1000000;
    if (rc > 0 && (pf[0].revents & POLLIN) && drain(w)) {
      if (!due) first = now;
      due = now + FP_WATCH_DEBOUNCE_MS;
      if (due > first + FP_WATCH_MAX_DELAY_MS) due = first + FP_WATCH_MAX_DELAY_MS;
    }
    if (due && now >= due) {
      due = 0;
      fp_log(FP_LOG_INFO, "rules", "change in %s: reloading the rules", w->dir);
      w->on_change(w->arg);
    }
  }
}

fp_watch_t *fp_watch_new(const char *dir, void (*on_change)(void *), void *arg, char *errstr,
                         size_t errstr_size) {
  fp_watch_t *w = NULL;
  if (!dir || !on_change) {
    fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "watch: no directory or callback");
    return NULL;
  }
  if (!(w = calloc(1, sizeof *w))) goto nomem;
  w->fd = w->stop[0] = w->stop[1] = w->wd_dir = w->wd_lib = -1;
  w->on_change = on_change;
  w->arg = arg;
  if (!(w->dir = strdup(dir))) goto nomem;
  if ((w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
    fp_seterr(errstr, errstr_size, FP_ERR_IO, "watch %s: inotify: %s", dir, strerror(errno));
    goto err;
  }
  if ((w->wd_dir = inotify_add_watch(w->fd, dir, WATCH_MASK | IN_ONLYDIR)) < 0) {
    fp_seterr(errstr, errstr_size, FP_ERR_IO, "watch %s: %s", dir, strerror(errno));
    goto err;
  }
  add_lib(w); /* optional: no lib/ is fine */
  if (pipe2(w->stop, O_CLOEXEC) != 0) {
    fp_seterr(errstr, errstr_size, FP_ERR_IO, "watch %s: pipe: %s", dir, strerror(errno));
    goto err;
  }
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "watch %s: cannot start the thread", dir);
    goto err;
  }
  w->started = 1;
  return w;
nomem:
  fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "out of memory");
err:
  fp_watch_destroy(w);
  return NULL;
}

void fp_watch_destroy(fp_watch_t *w) {
  if (!w) return;
  if (w->started) {
    ssize_t rc;
    do rc = write(w->stop[1], "x", 1);
    while (rc < 0 && errno == EINTR);
    pthread_join(w->thread, NULL);
  }
  if (w->fd >= 0) close(w->fd);
  if (w->stop[0] >= 0) close(w->stop[0]);
  if (w->stop[1] >= 0) close(w->stop[1]);
  free(w->dir);
  free(w);
}

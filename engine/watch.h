/*
 * watch.h - a rules-directory watcher: one thread that watches a directory and its `lib/`
 * subfolder with inotify and, once changes settle, calls back (the engine wires the callback
 * to fp_engine_reload, so a file change reloads the rules like SIGHUP does).
 */
#ifndef FP_WATCH_H
#define FP_WATCH_H

#include <stddef.h>

/** Quiet time after the last change before the callback runs (trailing debounce). */
#define FP_WATCH_DEBOUNCE_MS 200
/** A stream of changes that never goes quiet still calls back at least this often. */
#define FP_WATCH_MAX_DELAY_MS 2000

typedef struct fp_watch_s fp_watch_t;

/**
 * Starts watching @p dir (and @p dir/lib when it exists or appears). Changes that count: a
 * `*.lua` file written and closed, created, deleted, renamed in or out, or its attributes
 * changed, and any entry whose name starts with ".." (Kubernetes ConfigMap volumes swap a
 * `..data` symlink). Editor scratch files (".x.lua.swp", "x.lua~") do not count.
 * @p on_change runs on the watcher's thread, once per settled burst of changes (after
 * FP_WATCH_DEBOUNCE_MS without a new change, or FP_WATCH_MAX_DELAY_MS into a burst); it
 * must be quick and thread-safe (fp_engine_reload is).
 * @param dir copied. @param arg passed to @p on_change, borrowed until fp_watch_destroy().
 * @returns the watcher (owned by the caller), or NULL with the reason in @p errstr.
 */
fp_watch_t *fp_watch_new(const char *dir, void (*on_change)(void *), void *arg, char *errstr,
                         size_t errstr_size);

/** Stops the thread (a pending, not yet delivered change is dropped) and frees. NULL is fine. */
void fp_watch_destroy(fp_watch_t *w);

#endif

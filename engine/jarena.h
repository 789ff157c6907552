/*
 * jarena.h - bump arenas for the JSON documents of a run of mentions.
 *
 * Decoding a mention with jansson makes some 40 small allocations (a json_t per value, a
 * string per key and value, the object's hash table), all freed together when the run ends.
 * An arena serves them from large chunks and frees them all at once, by rewinding.
 *
 * jansson's allocator is process-wide (json_set_alloc_funcs), so this module installs its
 * own pair once, before main (a constructor), when it is linked: outside an arena they
 * are malloc and free with a 16-byte header; inside one (a thread between fp_jarena_enter
 * and fp_jarena_leave) they bump-allocate, and json_decref of an arena value frees nothing.
 * Arena blocks are told from heap blocks by their address (8 mod 16: see jarena.c), so any
 * thread may json_decref any value.
 *
 * The rule that makes this safe: every document allocated in an arena is released
 * (json_decref) before fp_jarena_reset, and nothing takes a reference to any part of one
 * that outlives it. The pipeline keeps it: mention documents live from decode to
 * release_inputs(), the Lua views of them are invalidated at release, and everything that
 * outlives a run (incident state, samples, events) is copied out as C strings or new
 * documents made outside the arena. And a document made in an arena is arena memory
 * throughout: nothing adds a heap value to it afterwards, so releasing it need not walk it
 * (fp_mention_clear drops it; the reset frees it). Builds with AddressSanitizer check that
 * rule: there every block is a chunk of its own and every reset frees them all, so a use
 * after the reset is a use-after-free that ASan reports.
 */
#ifndef FP_JARENA_H
#define FP_JARENA_H

#include <stddef.h>

typedef struct fp_jarena_s fp_jarena_t;

/** Creates an empty arena (no chunk until the first allocation). @returns NULL if out of memory. */
fp_jarena_t *fp_jarena_new(void);
/** Frees the arena and its chunks. Every document in it must have been released. */
void fp_jarena_destroy(fp_jarena_t *a);

/** jansson allocations of the calling thread come from @p a (NULL: the heap) until the
 *  matching leave. @returns the previous arena, to give to fp_jarena_leave. */
fp_jarena_t *fp_jarena_enter(fp_jarena_t *a);
/** Restores the arena fp_jarena_enter returned. */
void fp_jarena_leave(fp_jarena_t *prev);

/** Rewinds @p a: every document allocated in it must already be released. Keeps up to a
 *  few MB of chunks for the next run and frees the rest (a run of huge mentions does not
 *  keep its memory). */
void fp_jarena_reset(fp_jarena_t *a);

/** 1 if @p p (any jansson value, or NULL) is an arena block, 0 for the heap or NULL. */
int fp_jarena_owns(const void *p);

/** Bytes handed out since the last reset (for tests and benchmarks). */
size_t fp_jarena_used(const fp_jarena_t *a);
/** Bytes of chunks the arena holds (kept across resets, bounded). */
size_t fp_jarena_held(const fp_jarena_t *a);
/** 1 in builds where the arena is checked (AddressSanitizer: a chunk per block, none kept
 *  across a reset), else 0. */
int fp_jarena_checked(void);

#endif

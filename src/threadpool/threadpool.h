/* Thread pool layer: a fixed team of threads that any number of callers may share. Its workers
 * are created once (dc_pool_create), so running a task never creates a thread or allocates.
 * Depends on libc and POSIX threads only (no other layer of the library).
 *
 * Several threads may call dc_pool_run on one pool at the same time: the runs are serialized
 * (one task occupies the workers at a time), so sharing a pool never oversubscribes the cores
 * and never mixes two tasks' members. */
#ifndef DYNCONV_SRC_THREADPOOL_H
#define DYNCONV_SRC_THREADPOOL_H

#include <stddef.h>

typedef struct dc_pool dc_pool;

/* fn(ctx, index, count) runs once for every index in [0, count), each in its own thread. */
typedef void (*dc_pool_task)(void *ctx, size_t index, size_t count);

/* A pool of `threads` >= 1: the thread that runs a task counts as one, so threads - 1 workers
 * are started. NULL on failure (out of memory or thread creation refused). threads == 1
 * creates no thread. */
dc_pool *dc_pool_create(size_t threads);

/* Joins the workers. No run may be in progress. NULL is ignored. */
void dc_pool_destroy(dc_pool *pool);

/* Size given at creation (the caller's thread included). */
size_t dc_pool_size(const dc_pool *pool);

/* Runs fn on members 0 .. team - 1 (1 <= team <= dc_pool_size), index 0 in the calling thread,
 * and returns when all are done. The other workers stay asleep. Waits while another thread's
 * run is in progress on the same pool. */
void dc_pool_run(dc_pool *pool, size_t team, dc_pool_task fn, void *ctx);

/* CPUs this process may run on (its affinity mask), at least 1. */
size_t dc_available_cpus(void);

#endif

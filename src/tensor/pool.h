/* A fixed team of threads for one handle: the caller plus `threads - 1` workers created once
 * (at create / set_num_threads), so that running a task never creates threads or allocates.
 * Used by one caller at a time (a handle is single-thread-use). */
#ifndef DYNCONV_SRC_POOL_H
#define DYNCONV_SRC_POOL_H

#include <stddef.h>

typedef struct dc_pool dc_pool;

/* fn(ctx, index, count) runs once for every index in [0, count), each in its own thread. */
typedef void (*dc_pool_task)(void *ctx, size_t index, size_t count);

/* A team of `threads` >= 1 (the caller counts as one). NULL on failure (out of memory or
 * thread creation refused). threads == 1 creates no thread. */
dc_pool *dc_pool_create(size_t threads);

/* Joins the workers. NULL is ignored. */
void dc_pool_destroy(dc_pool *pool);

/* Team size given at creation. */
size_t dc_pool_size(const dc_pool *pool);

/* Runs fn on every member, index 0 in the calling thread, and returns when all are done. */
void dc_pool_run(dc_pool *pool, dc_pool_task fn, void *ctx);

/* CPUs this process may run on (its affinity mask), at least 1. */
size_t dc_available_cpus(void);

#endif

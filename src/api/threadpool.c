/* Public thread pools: reference counting, the process-wide default pool, and the one change the
 * library makes to the BLAS's state (its thread count set to 1 when the first pool with
 * workers starts). Handles never own threads: each holds a reference to a pool. */
#include "internal.h"

#include "threadpool.h"

#include <cblas.h>

#include <pthread.h>
#include <stdlib.h>

/* Guards every reference count and the default pool pointer. Held only for counting and for
 * creating or joining a pool, never during a forward. */
static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;
static dynconv_threadpool *default_pool; /* NULL until a handle needs it, and once unused */

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* A forked child has none of the parent's threads: the default pool it inherits would wait for
 * workers that do not exist. The registry is held across fork() (so the child's copy is
 * consistent), and the child forgets the inherited default pool (its memory is left as it is:
 * handles copied from the parent still point at it) so that its own handles start a new one. */
static void before_fork(void) { pthread_mutex_lock(&registry); }
static void after_fork_parent(void) { pthread_mutex_unlock(&registry); }
static void after_fork_child(void) {
    default_pool = NULL;
    pthread_mutex_unlock(&registry);
}
static void register_fork_handlers(void) {
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* The library's parallelism is its pools: each BLAS call made from a pool's threads must run
 * on one thread, or BLAS threads and pool threads compete for the cores (and OpenBLAS 0.3.21
 * serializes concurrent multi-threaded calls). OpenBLAS only has a process-wide count, so it is
 * set once, before the first worker exists, and never again: no forward changes it while
 * another may be running. */
static void blas_single_thread(void) {
    if (openblas_get_num_threads() != 1) {
        openblas_set_num_threads(1);
    }
}

/* A new pool with one reference; NULL when its threads cannot be started. */
static dynconv_threadpool *new_pool(size_t threads) {
    if (threads > 1) {
        pthread_once(&blas_once, blas_single_thread);
    }
    dynconv_threadpool *p = malloc(sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->pool = dc_pool_create(threads);
    if (p->pool == NULL) {
        free(p);
        return NULL;
    }
    p->threads = threads;
    p->refs = 1;
    return p;
}

/* Drops one reference; the caller holds the registry lock. Returns the pool to free (after the
 * lock is released, since joining workers takes time) or NULL while it is still referenced. */
static dynconv_threadpool *unref_locked(dynconv_threadpool *p) {
    if (--p->refs > 0) {
        return NULL;
    }
    if (p == default_pool) {
        default_pool = NULL;
    }
    return p;
}

static void free_pool(dynconv_threadpool *p) {
    if (p != NULL) {
        dc_pool_destroy(p->pool);
        free(p);
    }
}

dynconv_status dc_threadpool_acquire(const char *fn, dynconv_threadpool *pool,
                                     dynconv_threadpool **out) {
    pthread_once(&fork_once, register_fork_handlers);
    pthread_mutex_lock(&registry);
    if (pool == NULL) {
        if (default_pool == NULL) {
            const size_t cpus = dc_available_cpus();
            default_pool = new_pool(cpus);
            if (default_pool == NULL) {
                pthread_mutex_unlock(&registry);
                return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                               "%s: cannot start the default thread pool (%zu threads)", fn,
                               cpus);
            }
        } else {
            default_pool->refs++;
        }
        pool = default_pool;
    } else {
        pool->refs++;
    }
    pthread_mutex_unlock(&registry);
    *out = pool;
    return DYNCONV_OK;
}

void dc_threadpool_release(dynconv_threadpool *pool) {
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&registry);
    dynconv_threadpool *dead = unref_locked(pool);
    pthread_mutex_unlock(&registry);
    free_pool(dead);
}

dynconv_status dynconv_threadpool_create(int num_threads, uint32_t flags,
                                         dynconv_threadpool **out) {
    static const char fn[] = "dynconv_threadpool_create";
    if (out == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: out is NULL", fn);
    }
    if (num_threads < 0 || num_threads > DYNCONV_MAX_THREADS) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: num_threads must be in [0, %d] (0: all available CPUs), got %d", fn,
                       DYNCONV_MAX_THREADS, num_threads);
    }
    if (flags != 0) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)flags);
    }
    const size_t threads = num_threads == 0 ? dc_available_cpus() : (size_t)num_threads;
    dynconv_threadpool *p = new_pool(threads);
    if (p == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot start %zu threads", fn, threads);
    }
    *out = p;
    return DYNCONV_OK;
}

void dynconv_threadpool_destroy(dynconv_threadpool *pool) { dc_threadpool_release(pool); }

dynconv_status dynconv_threadpool_get_num_threads(const dynconv_threadpool *pool, int *threads) {
    if (pool == NULL || threads == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       pool == NULL ? "pool" : "threads");
    }
    *threads = (int)pool->threads;
    return DYNCONV_OK;
}

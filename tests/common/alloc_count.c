/* See alloc_count.h. */
#define _POSIX_C_SOURCE 200809L

#include "alloc_count.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef COUNTS_ALLOCATIONS
#define COUNTS_ALLOCATIONS 1
#endif

static atomic_bool counting;
static atomic_size_t allocations;

#if COUNTS_ALLOCATIONS
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *ptr);

static void count_one(void)
{
    if (atomic_load(&counting)) {
        atomic_fetch_add(&allocations, 1);
    }
}

void *malloc(size_t size)
{
    count_one();
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    count_one();
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
    count_one();
    return __libc_realloc(ptr, size);
}

void free(void *ptr)
{
    __libc_free(ptr);
}

void *memalign(size_t alignment, size_t size); /* glibc's malloc.h, not included here */
void *memalign(size_t alignment, size_t size)
{
    count_one();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    count_one();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    count_one();
    void *p = __libc_memalign(alignment, size);
    if (p == NULL) {
        return ENOMEM;
    }
    *out = p;
    return 0;
}
#endif

/* Under valgrind the allocator is valgrind's: it redirects malloc and friends wherever they
 * are defined, so calls from the library never reach the functions above and a count of zero
 * would prove nothing. Its preload libraries in LD_PRELOAD give it away. */
static bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

bool tu_alloc_count_available(void) { return COUNTS_ALLOCATIONS != 0 && !under_valgrind(); }

void tu_alloc_count_begin(void)
{
    atomic_store(&allocations, 0);
    atomic_store(&counting, true);
}

size_t tu_alloc_count_end(void)
{
    atomic_store(&counting, false);
    return atomic_load(&allocations);
}

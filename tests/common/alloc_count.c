/* See alloc_count.h. */
#define _GNU_SOURCE /* dl_iterate_phdr */

#include "alloc_count.h"

#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The sanitizers bring their own allocator, which these definitions would fight. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef COUNTS_ALLOCATIONS
#define COUNTS_ALLOCATIONS 1
#endif

/* ---------------------------------------------------------------------------------------- */
/* Where the code of each object of interest lies                                           */

typedef enum owner { OWNER_LIBRARY, OWNER_BLAS, OWNER_LIBC, OWNER_OTHER } owner;

typedef struct text_range {
    uintptr_t begin, end;
    owner who;
} text_range;

/* A process maps a few dozen objects with one or two executable segments each. The table is
 * static because it is filled and read where no allocation may happen. */
enum { MAX_RANGES = 64 };
static text_range ranges[MAX_RANGES];
static size_t range_count;

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static owner owner_of_object(const char *path)
{
    const char *name = base_name(path);
    if (starts_with(name, "libdynconv.so")) {
        return OWNER_LIBRARY;
    }
    /* Debian installs OpenBLAS as libopenblas.so.0 and, through alternatives, as the system's
     * libblas.so.3 and liblapack.so.3. */
    if (starts_with(name, "libopenblas") || starts_with(name, "libblas.so") ||
        starts_with(name, "liblapack.so")) {
        return OWNER_BLAS;
    }
    if (starts_with(name, "libc.so") || starts_with(name, "ld-linux") ||
        starts_with(name, "libpthread.so")) {
        return OWNER_LIBC;
    }
    return OWNER_OTHER;
}

static int note_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    const owner who = owner_of_object(info->dlpi_name != NULL ? info->dlpi_name : "");
    if (who == OWNER_OTHER) {
        return 0;
    }
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) != 0 && range_count < MAX_RANGES) {
            const uintptr_t begin = (uintptr_t)info->dlpi_addr + (uintptr_t)ph->p_vaddr;
            ranges[range_count++] = (text_range){begin, begin + (uintptr_t)ph->p_memsz, who};
        }
    }
    return 0;
}

static atomic_bool counting;
static atomic_size_t counts[3]; /* libdynconv, the BLAS, others */

#if COUNTS_ALLOCATIONS
static owner owner_of_address(const void *address)
{
    const uintptr_t a = (uintptr_t)address;
    for (size_t i = 0; i < range_count; ++i) {
        if (a >= ranges[i].begin && a < ranges[i].end) {
            return ranges[i].who;
        }
    }
    return OWNER_OTHER;
}

/* ---------------------------------------------------------------------------------------- */
/* Counting                                                                                  */

static void count_for(owner who)
{
    const size_t slot = who == OWNER_LIBRARY ? 0 : who == OWNER_BLAS ? 1 : 2;
    atomic_fetch_add(&counts[slot], 1);
}

/* An allocation requested from the C library or the loader on someone else's behalf: the first
 * frame beyond them, past the allocation function's own return address, is the one asking. */
static _Thread_local bool walking;

__attribute__((noinline)) static void count_walking_past_libc(void *return_address)
{
    if (walking) {
        return; /* the unwinder's own needs, if it ever had any after priming */
    }
    walking = true;
    void *frames[64];
    const int n = backtrace(frames, 64);
    owner who = OWNER_OTHER;
    int i = 0;
    while (i < n && frames[i] != return_address) {
        ++i;
    }
    for (++i; i < n; ++i) {
        const owner o = owner_of_address(frames[i]);
        if (o != OWNER_LIBC) {
            who = o;
            break;
        }
    }
    walking = false;
    count_for(who);
}

static void count_one(void *return_address)
{
    if (!atomic_load(&counting)) {
        return;
    }
    const owner who = owner_of_address(return_address);
    if (who == OWNER_LIBC) {
        count_walking_past_libc(return_address);
    } else {
        count_for(who);
    }
}

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *ptr);

void *malloc(size_t size)
{
    count_one(__builtin_return_address(0));
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    count_one(__builtin_return_address(0));
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
    count_one(__builtin_return_address(0));
    return __libc_realloc(ptr, size);
}

void free(void *ptr) { __libc_free(ptr); }

void *memalign(size_t alignment, size_t size); /* glibc's malloc.h, not included here */
void *memalign(size_t alignment, size_t size)
{
    count_one(__builtin_return_address(0));
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    count_one(__builtin_return_address(0));
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    count_one(__builtin_return_address(0));
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
    atomic_store(&counting, false);
    range_count = 0;
    dl_iterate_phdr(note_object, NULL);
    bool found = false;
    for (size_t i = 0; i < range_count; ++i) {
        found = found || ranges[i].who == OWNER_LIBRARY;
    }
    if (!found) {
        fprintf(stderr, "alloc_count: libdynconv.so is not loaded: link the test against the "
                        "shared library\n");
        abort();
    }
    /* The first backtrace() loads the unwinder, which allocates: do it now, uncounted. */
    void *frames[4];
    (void)backtrace(frames, 4);
    for (size_t i = 0; i < 3; ++i) {
        atomic_store(&counts[i], 0);
    }
    atomic_store(&counting, true);
}

tu_alloc_counts tu_alloc_count_end(void)
{
    atomic_store(&counting, false);
    return (tu_alloc_counts){atomic_load(&counts[0]), atomic_load(&counts[1]),
                             atomic_load(&counts[2])};
}

size_t tu_alloc_counts_total(tu_alloc_counts c) { return c.library + c.blas + c.other; }

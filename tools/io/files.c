/* Whole-file reading, and outputs that appear only when complete (temporary file + rename). */
#define _POSIX_C_SOURCE 200809L
#include "dcio_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void dcio_fail(dcio_error *err, const char *fmt, ...) {
    if (err == NULL) {
        return;
    }
    va_list args;
    va_start(args, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, args);
    va_end(args);
}

char *dcio_strdup(const char *s) {
    const size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

bool dcio_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *size,
                    dcio_error *err) {
    const int fd = open(path, O_RDONLY);
    if (fd < 0) {
        dcio_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        dcio_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return false;
    }
    if (!S_ISREG(sb.st_mode)) {
        dcio_fail(err, "%s: not a regular file", path);
        close(fd);
        return false;
    }
    if (sb.st_size < 0 || (uintmax_t)sb.st_size > (uintmax_t)max_bytes) {
        dcio_fail(err, "%s: file of %jd bytes exceeds the limit of %zu bytes", path,
                  (intmax_t)sb.st_size, max_bytes);
        close(fd);
        return false;
    }
    const size_t n = (size_t)sb.st_size;
    unsigned char *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        dcio_fail(err, "%s: out of memory reading %zu bytes", path, n);
        close(fd);
        return false;
    }
    size_t got = 0;
    while (got < n) {
        const ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            dcio_fail(err, "%s: read failed after %zu of %zu bytes: %s", path, got, n,
                      r < 0 ? strerror(errno) : "file shrank while reading");
            free(buf);
            close(fd);
            return false;
        }
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = n;
    return true;
}

static bool write_all(int fd, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n > 0) {
        const ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        b += w;
        n -= (size_t)w;
    }
    return true;
}

bool dcio_pending_write(const char *path, const void *head, size_t head_size, const void *body,
                        size_t body_size, dcio_pending *out, dcio_error *err) {
    /* The temporary file lives in the destination's directory so that rename() is atomic.
     * It is created with O_EXCL and mode 0666, so the umask applies as to any output (mkstemp
     * would make it 0600, and changing the umask is not thread-safe). */
    static unsigned counter;
    const size_t len = strlen(path);
    const size_t temp_size = len + 48;
    char *final_path = dcio_strdup(path);
    char *temp = malloc(temp_size);
    if (final_path == NULL || temp == NULL) {
        free(final_path);
        free(temp);
        dcio_fail(err, "%s: out of memory", path);
        return false;
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
        snprintf(temp, temp_size, "%s.tmp-%ld-%u", path, (long)getpid(), counter++);
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST) {
            break;
        }
    }
    if (fd < 0) {
        dcio_fail(err, "%s: cannot create a temporary file next to it: %s", path,
                  strerror(errno));
        free(final_path);
        free(temp);
        return false;
    }
    const bool ok = (head_size == 0 || write_all(fd, head, head_size)) &&
                    (body_size == 0 || write_all(fd, body, body_size));
    const int saved = errno;
    if (close(fd) != 0 || !ok) {
        dcio_fail(err, "%s: write failed: %s", path, strerror(ok ? errno : saved));
        unlink(temp);
        free(final_path);
        free(temp);
        return false;
    }
    out->path = final_path;
    out->temp_path = temp;
    return true;
}

bool dcio_pending_commit(dcio_pending *p, dcio_error *err) {
    if (p->temp_path == NULL) {
        dcio_fail(err, "%s: nothing to commit", p->path != NULL ? p->path : "(null)");
        return false;
    }
    if (rename(p->temp_path, p->path) != 0) {
        dcio_fail(err, "%s: cannot rename %s to it: %s", p->path, p->temp_path, strerror(errno));
        return false;
    }
    free(p->temp_path);
    p->temp_path = NULL;
    return true;
}

void dcio_pending_discard(dcio_pending *p) {
    if (p == NULL) {
        return;
    }
    if (p->temp_path != NULL) {
        unlink(p->temp_path);
        free(p->temp_path);
        p->temp_path = NULL;
    }
    free(p->path);
    p->path = NULL;
}

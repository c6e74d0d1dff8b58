/* dynconv_io: the file formats the command-line tool reads and writes, and the description of
 * the machine that the tools and the benchmarks report.
 *
 *   safetensors   the PyTorch ecosystem's weight file: 8-byte little-endian header length N,
 *                 N bytes of JSON, then the raw little-endian tensor data
 *   dynamic layer the tensors of one dynamic convolution, by PyTorch state_dict names
 *   .npy          NumPy arrays: float32 little-endian ('<f4'), C order, format 1.0 or 2.0
 *   workload      the benchmarks' list of convolution layers (bench/layers.txt)
 *
 * Every parser takes a memory buffer (pointer + length) and trusts nothing in it: every offset,
 * shape and length is checked, with overflow-checked arithmetic, before a byte is read. Parsed
 * objects borrow the buffer, which must outlive them. Functions return true on success; on
 * failure they return false, fill err->message (when err is not NULL) and leave their outputs
 * untouched.
 *
 * This is a static library of the tools, not part of libdynconv: it needs jansson, the core
 * library does not. It uses only the public header's structs, never the library's code. */
#ifndef DYNCONV_TOOLS_IO_DCIO_H
#define DYNCONV_TOOLS_IO_DCIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dynconv/dynconv.h>

/* Largest rank the readers accept (PyTorch weights have at most 5 here). */
#define DCIO_MAX_RANK 8

typedef struct dcio_error {
    char message[768];
} dcio_error;

/* ---------------------------------------------------------------------------------------- */
/* Whole files                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Reads a regular file into a malloc'ed buffer (free()), refusing files above max_bytes. */
bool dcio_read_file(const char *path, size_t max_bytes, unsigned char **data, size_t *size,
                    dcio_error *err);

/* An output written under a temporary name in the destination's directory; it replaces the
 * destination only on commit, so a failed run never leaves a partial or stale-looking file. */
typedef struct dcio_pending {
    char *path;      /* destination */
    char *temp_path; /* the written temporary file; NULL once committed or discarded */
} dcio_pending;

/* Writes head then body to a new temporary file next to `path` (mode 0666 minus the umask).
 * Not for concurrent use from several threads (the temporary names come from a counter). */
bool dcio_pending_write(const char *path, const void *head, size_t head_size, const void *body,
                        size_t body_size, dcio_pending *out, dcio_error *err);
/* Renames the temporary file to the destination. */
bool dcio_pending_commit(dcio_pending *p, dcio_error *err);
/* Removes the temporary file (if any) and frees the names. Safe after commit and on zeroed p. */
void dcio_pending_discard(dcio_pending *p);

/* ---------------------------------------------------------------------------------------- */
/* safetensors                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef enum dcio_dtype {
    DCIO_DTYPE_F32,
    DCIO_DTYPE_F16,
    DCIO_DTYPE_BF16,
    DCIO_DTYPE_F64,
    DCIO_DTYPE_UNSUPPORTED /* a dtype of the format that is not a float (I8, I64, BOOL, ...) */
} dcio_dtype;

typedef struct dcio_st_tensor {
    char *name;
    char dtype_name[8];   /* as written in the file: "F32", "I64", ... */
    dcio_dtype dtype;
    int rank;
    int64_t shape[DCIO_MAX_RANK];
    size_t numel;         /* product of shape (1 for rank 0) */
    size_t begin, end;    /* byte range inside the data section */
    const unsigned char *data; /* the data section + begin */
} dcio_st_tensor;

typedef struct dcio_safetensors {
    size_t count;
    dcio_st_tensor *tensors;  /* in file (JSON) order */
    size_t meta_count;
    char **meta_keys, **meta_values;
} dcio_safetensors;

/* Largest JSON header accepted (the format's reference implementation uses the same cap). */
#define DCIO_ST_MAX_HEADER ((size_t)100 * 1000 * 1000)

/* Parses and validates a whole safetensors file held in memory:
 *   - at least 8 bytes; header length within the buffer and at most DCIO_ST_MAX_HEADER;
 *   - the header is UTF-8 JSON whose top level is an object without duplicate keys;
 *   - "__metadata__", when present, maps strings to strings;
 *   - every other key is a tensor {"dtype": one of the format's dtypes, "shape": [ints >= 0],
 *     "data_offsets": [begin, end]} with end - begin == numel * dtype size (overflow-checked);
 *   - the tensors' byte ranges do not overlap, stay inside the data section and cover it
 *     exactly (as the format's reference implementation requires).
 * Unsupported dtypes parse (so other tensors of the file stay usable) but cannot be converted. */
bool dcio_st_parse(const void *buffer, size_t size, dcio_safetensors **out, dcio_error *err);
void dcio_st_free(dcio_safetensors *st);

/* The tensor called `name`, or NULL. */
const dcio_st_tensor *dcio_st_find(const dcio_safetensors *st, const char *name);
/* The metadata value of `key`, or NULL. */
const char *dcio_st_metadata(const dcio_safetensors *st, const char *key);

/* Converts a tensor to float32 (F32 copied, F16/BF16/F64 converted; F64 values outside the
 * float range are refused). out must hold t->numel floats. */
bool dcio_st_tensor_to_f32(const dcio_st_tensor *t, float *out, dcio_error *err);

/* Serialises tensors (float32, C order) and string metadata to a safetensors byte image:
 * *out is malloc'ed. Used by the tests and by anything that wants to save a layer from C. */
typedef struct dcio_st_entry {
    const char *name;
    int rank;
    const int64_t *shape;
    const float *data;
} dcio_st_entry;
bool dcio_st_serialize(const dcio_st_entry *entries, size_t count, const char *const *meta_keys,
                       const char *const *meta_values, size_t meta_count, unsigned char **out,
                       size_t *out_size, dcio_error *err);

/* ---------------------------------------------------------------------------------------- */
/* A dynamic convolution layer from a safetensors file                                     */
/* ---------------------------------------------------------------------------------------- */

/* Tensor names, after the prefix (state_dict of the common PyTorch re-implementations):
 *   weight                 [K, C_out, C_in/g, kh, kw]   (convolution)          required
 *                          [K, D_out, D_in]             (dynamic linear layer)
 *   bias                   [K, C_out]                                      optional
 *   attention.fc1.weight   [hidden, C_in] or [hidden, C_in, 1, 1]          required
 *   attention.fc1.bias     [hidden]                                        optional
 *   attention.fc2.weight   [K, hidden] or [K, hidden, 1, 1]                required
 *   attention.fc2.bias     [K]                                             optional
 * or, for the attention, attention.net.0.{weight,bias} and attention.net.2.{weight,bias}
 * (an nn.Sequential of conv 1x1, ReLU, conv 1x1). Any other tensor under <prefix>attention.
 * is refused (a batch norm there would otherwise be silently ignored). The rank of `weight`
 * says whether the layer is a convolution (5) or a linear layer (3).
 * The hyper-parameters come from the "__metadata__" strings stride, padding, dilation ("a" or
 * "a,b"), groups (one integer) and temperature (a plain decimal number; a linear layer has
 * only temperature), looked up first as
 * "<prefix>.key" (files with several layers) and then as "key", unless overridden in
 * dcio_layer_options. There are no defaults: a key neither in the file nor overridden (a file
 * saved from a bare state_dict has none) is an error naming every missing key, since guessing
 * stride 1 / padding 0 would silently compute another layer. An optional metadata key "layer"
 * ("conv2d" or "linear") must agree with the rank of `weight`. The checks of the geometry
 * itself (kernel larger than the input, ...) are left to the library's create functions.
 * docs/file-format.md is the full specification, which the Python reader and the exporter
 * (python/dynconv) follow too. */
typedef struct dcio_layer_options {
    const char *prefix; /* NULL or "": none; "layer1.conv" and "layer1.conv." are the same */
    bool set_stride, set_padding, set_dilation, set_groups, set_temperature;
    int64_t stride[2], padding[2], dilation[2], groups;
    float temperature;
} dcio_layer_options;

enum { DCIO_LAYER_WEIGHT, DCIO_LAYER_BIAS, DCIO_LAYER_FC1_WEIGHT, DCIO_LAYER_FC1_BIAS,
       DCIO_LAYER_FC2_WEIGHT, DCIO_LAYER_FC2_BIAS, DCIO_LAYER_TENSORS };

typedef struct dcio_layer {
    bool linear;                              /* a dynamic linear layer, else a convolution */
    dynconv_conv2d_geometry geometry;         /* a convolution's (zeroed for a linear layer) */
    dynconv_linear_geometry linear_geometry;  /* a linear layer's (zeroed for a convolution) */
    float temperature;
    /* malloc'ed float32 copies in the order of the enum above; optional ones may be NULL */
    float *tensor[DCIO_LAYER_TENSORS];
    size_t numel[DCIO_LAYER_TENSORS];
    char *name[DCIO_LAYER_TENSORS];     /* full name in the file, NULL when absent */
    int rank[DCIO_LAYER_TENSORS];
    int64_t shape[DCIO_LAYER_TENSORS][DCIO_MAX_RANK];
} dcio_layer;

bool dcio_layer_load(const dcio_safetensors *st, const dcio_layer_options *options,
                     dcio_layer *out, dcio_error *err);
/* The weights struct pointing into the layer's arrays (of a convolution, of a linear layer). */
dynconv_conv2d_weights dcio_layer_weights(const dcio_layer *layer);
dynconv_linear_weights dcio_layer_linear_weights(const dcio_layer *layer);
void dcio_layer_free(dcio_layer *layer);

/* Parses "a" or "a,b" (decimal, no sign) into v[2] ("a" means a,a); min is the smallest value
 * allowed. Returns false on anything else. */
bool dcio_parse_pair(const char *text, int64_t min, int64_t v[2]);
/* Parses a finite float > 0 written as digits, an optional fraction and an optional exponent
 * (no sign, white space, hex or inf/nan), at most 3.0e38 and not rounding to 0 in float. */
bool dcio_parse_temperature(const char *text, float *out);

/* ---------------------------------------------------------------------------------------- */
/* NumPy .npy                                                                               */
/* ---------------------------------------------------------------------------------------- */

typedef struct dcio_npy {
    int rank;
    int64_t shape[DCIO_MAX_RANK];
    size_t numel;
    const unsigned char *data; /* numel little-endian float32 values, borrowed */
} dcio_npy;

/* Parses a .npy file held in memory: magic, version 1.0 or 2.0, a header dict with exactly the
 * keys descr ('<f4'), fortran_order (False) and shape (a tuple of ints >= 0), and exactly
 * numel * 4 bytes of data after it. Anything else is refused with a message saying what. */
bool dcio_npy_parse(const void *buffer, size_t size, dcio_npy *out, dcio_error *err);
/* Copies the data out as floats (out holds npy->numel floats). */
void dcio_npy_to_f32(const dcio_npy *npy, float *out);

/* Builds the header (magic .. final newline) of a '<f4' C-order array, format version 1.0,
 * padded to a multiple of 64 bytes as numpy does. Returns the header length, or 0 for a rank
 * outside [0, DCIO_MAX_RANK], a negative size or a buffer that is too small
 * (DCIO_NPY_MAX_HEADER bytes always suffice). */
#define DCIO_NPY_MAX_HEADER 512
size_t dcio_npy_header(const int64_t *shape, int rank, char *buf, size_t buf_size);

/* Writes a float32 array as .npy under a temporary name (see dcio_pending). */
bool dcio_npy_write_pending(const char *path, const int64_t *shape, int rank, const float *data,
                            dcio_pending *out, dcio_error *err);

/* ---------------------------------------------------------------------------------------- */
/* The benchmark workload (bench/layers.txt; dynconv bench, dynconv-bench)                   */
/* ---------------------------------------------------------------------------------------- */

/* One layer per line: `name in out kernel stride pad groups size`, fields separated by space,
 * tab, CR, VT or FF; '#' starts a comment to the end of the line; blank lines are skipped.
 *   name     1 to DCIO_WORKLOAD_NAME_MAX bytes, no white space and no '#'
 *   sizes    decimal integers with an optional sign: 0 < in, out <= DCIO_WORKLOAD_MAX_CHANNELS;
 *            0 < kernel, stride <= DCIO_WORKLOAD_MAX_KERNEL; 0 <= pad <=
 *            DCIO_WORKLOAD_MAX_KERNEL; groups > 0 dividing in and out; 0 < size <=
 *            DCIO_WORKLOAD_MAX_SIZE; size + 2 * pad >= kernel (the square input, padded, holds
 *            the kernel)
 *   a line   at most DCIO_WORKLOAD_LINE_MAX bytes (its '\n' not counted), no NUL byte
 * and at least one layer.
 * bench/workload.py reads the same grammar with the same messages. */
#define DCIO_WORKLOAD_NAME_MAX 63
#define DCIO_WORKLOAD_LINE_MAX 510
#define DCIO_WORKLOAD_MAX_CHANNELS 65536
#define DCIO_WORKLOAD_MAX_KERNEL 15 /* also the largest stride and padding */
#define DCIO_WORKLOAD_MAX_SIZE 4096
#define DCIO_WORKLOAD_MAX_BYTES ((size_t)1 << 24) /* of a file dcio_workload_read reads */

typedef struct dcio_workload_layer {
    char name[DCIO_WORKLOAD_NAME_MAX + 1];
    int64_t in, out, kernel, stride, pad, groups, size;
} dcio_workload_layer;

/* The benchmarks build every line as a dynamic convolution of DCIO_WORKLOAD_KERNELS kernels
 * (1 for the static comparison) with attention hidden size in / DCIO_WORKLOAD_REDUCTION (at
 * least 1): square kernel, stride and padding, dilation 1, as in dcio_workload_geometry. */
#define DCIO_WORKLOAD_KERNELS 4
#define DCIO_WORKLOAD_REDUCTION 4

/* Parses a workload text held in memory (size bytes; no terminating NUL needed). *layers is
 * malloc'ed (free()), in file order. Every message starts with "<origin>:<line>: " (or names
 * origin alone for a text without layers), origin being the file's name or a description. */
bool dcio_workload_parse(const void *buffer, size_t size, const char *origin,
                         dcio_workload_layer **layers, size_t *count, dcio_error *err);
/* Reads (at most DCIO_WORKLOAD_MAX_BYTES) and parses the workload file at path. */
bool dcio_workload_read(const char *path, dcio_workload_layer **layers, size_t *count,
                        dcio_error *err);
/* The geometry of a workload layer with `kernels` kernels (see DCIO_WORKLOAD_KERNELS). */
dynconv_conv2d_geometry dcio_workload_geometry(const dcio_workload_layer *l, int64_t kernels);

/* ---------------------------------------------------------------------------------------- */
/* The machine (dynconv info, dynconv bench, dynconv-bench)                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct dcio_cpu {
    char model[256]; /* "model name" of /proc/cpuinfo, or "unknown" */
    bool sse42, avx, avx2, fma, avx512f;
    bool avx512_skylakex; /* AVX-512 F, BW, VL, DQ and CD: what OpenBLAS's SkylakeX core needs */
} dcio_cpu;

void dcio_cpu_detect(dcio_cpu *cpu);

/* "avx512f", "avx2" or "baseline": the widest vector ISA. */
const char *dcio_cpu_isa(const dcio_cpu *cpu);

/* When OpenBLAS runs one of its generic cores (Prescott, Core2, ...: what it falls back to on a
 * CPU it does not recognise) although the CPU has AVX2 or AVX-512, the core that fits the CPU
 * ("Haswell" or "SkylakeX"), to be set as OPENBLAS_CORETYPE before OpenBLAS loads. NULL when
 * OpenBLAS runs a core it chose for this CPU (which is never second-guessed) or the CPU has
 * nothing better. `core` is openblas_get_corename()'s answer (dynconv_blas_core()). */
const char *dcio_blas_better_core(const char *core, const dcio_cpu *cpu);

#endif

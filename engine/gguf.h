/* GGUF v2/v3 reader: validates a model file completely before anything uses it. */
#ifndef MS_GGUF_H
#define MS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Metadata value types (GGUF spec). */
enum gguf_vtype {
	GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4,
	GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8,
	GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
};

#define GGUF_MAGIC          0x46554747u  /* "GGUF" little-endian */
#define GGUF_MAX_NAME       64           /* tensor name bytes */
#define GGUF_MAX_DIMS       4
#define GGUF_DEFAULT_ALIGN  32
#define GGUF_MAX_ALIGN      (1u << 16)   /* larger alignments are rejected */

/* A string inside the mapping: not NUL-terminated. */
struct gguf_str {
	const char *p;
	uint64_t n;
};

struct gguf_arr {
	uint32_t type;        /* element type (never GGUF_ARRAY: nested arrays are rejected) */
	uint64_t n;           /* element count, already checked against the file */
	const uint8_t *data;  /* first element inside the mapping; for strings, the
	                         first u64 length prefix (walk with ms_gguf_arr_str) */
};

struct gguf_value {
	uint32_t type;        /* enum gguf_vtype */
	union {
		uint64_t u;           /* U8..U64, BOOL (0/1) */
		int64_t i;            /* I8..I64 */
		double f;             /* F32, F64 */
		struct gguf_str s;    /* STRING */
		struct gguf_arr a;    /* ARRAY */
	} v;
};

struct gguf_kv {
	struct gguf_str key;
	struct gguf_value val;
};

struct gguf_tensor {
	char name[GGUF_MAX_NAME + 1];   /* NUL-terminated copy */
	uint32_t n_dims;                /* 1..4 */
	uint64_t ne[GGUF_MAX_DIMS];     /* ne[0] contiguous; unused dims are 1 */
	uint32_t type;                  /* ggml type id, known to quant.h */
	uint64_t offset;                /* from the start of the data section */
	uint64_t nbytes;                /* exact byte size, overflow-checked */
	const void *data;               /* inside the mapping, bounds-checked */
};

struct gguf {
	const uint8_t *base;    /* whole file (mmap or caller's buffer) */
	size_t size;
	bool mapped;            /* base was mmap()ed by ms_gguf_open and is unmapped by ms_gguf_close */
	uint32_t version;       /* 2 or 3 */
	uint32_t alignment;     /* general.alignment or 32 */
	uint64_t n_kv;
	struct gguf_kv *kv;
	uint64_t n_tensors;
	struct gguf_tensor *tensors;
	uint64_t data_offset;   /* file offset of the data section */
};

/*
 * Maps path read-only and parses it. On failure returns -errno with a
 * reason naming the field at fault and its value; *out is set only on
 * success. -EBADMSG: malformed or truncated content (every parse error,
 * including an empty file); -ENOMEM: allocation failed; -EISDIR, -EINVAL
 * (not a regular file), -EFBIG; or the errno of open/fstat/mmap (-ENOENT,
 * -EACCES ...). ms_gguf_open_mem returns the same codes, and -EINVAL for a
 * NULL buffer with a non-zero size.
 */
int ms_gguf_open(const char *path, struct gguf **out, ms_err *err);

/* Parses a caller-owned buffer (tests, fuzzing); buf must outlive the result. */
int ms_gguf_open_mem(const void *buf, size_t size, struct gguf **out, ms_err *err);

/* Frees everything; accepts NULL. */
void ms_gguf_close(struct gguf *g);

/* Lookups; NULL when absent. key is NUL-terminated. */
const struct gguf_kv *ms_gguf_find_kv(const struct gguf *g, const char *key);
const struct gguf_tensor *ms_gguf_find_tensor(const struct gguf *g, const char *name);

/*
 * Typed getters. 0 on success; -ENOENT when absent; -EINVAL (with a reason)
 * when the stored type cannot represent the request: integer getters accept
 * any integer type whose value fits, the float getter accepts F32/F64.
 */
int ms_gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out, ms_err *err);
int ms_gguf_get_f32(const struct gguf *g, const char *key, float *out, ms_err *err);
int ms_gguf_get_bool(const struct gguf *g, const char *key, bool *out, ms_err *err);
int ms_gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out, ms_err *err);
/* Array whose elements must be of elem_type. */
int ms_gguf_get_arr(const struct gguf *g, const char *key, uint32_t elem_type,
		 struct gguf_arr *out, ms_err *err);

/*
 * String-array walking: *cursor starts at a->data; each call returns the
 * next element and advances. The parser already checked every element's
 * length against the file, so this cannot run out of bounds for an array
 * obtained from this struct gguf.
 */
struct gguf_str ms_gguf_arr_str(const uint8_t **cursor);

/* Element i of a numeric array as the given type (caller checks a->type). */
float ms_gguf_arr_f32(const struct gguf_arr *a, uint64_t i);
int32_t ms_gguf_arr_i32(const struct gguf_arr *a, uint64_t i);

/* Byte size of one element of a fixed-size value type; 0 for STRING/ARRAY/unknown. */
size_t ms_gguf_vtype_size(uint32_t type);

#endif

/* Streaming GGUF v3 writer for the tools: metadata in memory, tensor data streamed to a file descriptor. */
#ifndef MS_GGUF_WRITER_H
#define MS_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/*
 * Use:
 *   w = gguf_writer_new(0);
 *   gguf_writer_add_str(w, "general.architecture", "llama"); ...
 *   gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_TYPE_F16); ...
 *   gguf_writer_begin(w, fd);        header, metadata, tensor infos, padding
 *   gguf_writer_write(w, buf, n);    the tensors' bytes, in the order added,
 *   ...                              in pieces of any size; alignment padding
 *                                    between tensors is inserted here
 *   gguf_writer_end(w);              checks every byte arrived, flushes
 *   gguf_writer_free(w);
 *
 * Only the metadata and one output buffer are held in memory, so a model of
 * any size streams through. Every function returns 0 or a negative errno:
 * -EINVAL (bad argument or call out of order), -EEXIST (duplicate key or
 * tensor name), -EOVERFLOW (sizes past 64 bits), -ENOMEM, or write(2)'s error.
 * gguf_writer_errmsg() says why in one sentence. After an error the writer
 * only accepts gguf_writer_free(). The host must be little-endian.
 */
struct gguf_writer;

/* alignment: power of two up to GGUF_MAX_ALIGN, 0 for the default 32. NULL on error. */
struct gguf_writer *gguf_writer_new(uint32_t alignment);
void gguf_writer_free(struct gguf_writer *w);

/* Reason for the last error, "" when none. */
const char *gguf_writer_errmsg(const struct gguf_writer *w);

/* Metadata; keys are NUL-terminated, 1..65535 bytes, unique. */
int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v);
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s);
int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, size_t n);

/* Array of n fixed-size elements of elem_type (not STRING/ARRAY), in host order. */
int gguf_writer_add_arr(struct gguf_writer *w, const char *key, uint32_t elem_type,
			const void *elems, uint64_t n);
/* Array of n NUL-terminated strings. */
int gguf_writer_add_str_arr(struct gguf_writer *w, const char *key,
			    const char *const *strs, uint64_t n);

/*
 * Copies a value read by the GGUF reader (any type, arrays included) under a
 * key that need not be NUL-terminated; the value's bytes are copied, so the
 * source file may be closed afterwards.
 */
int gguf_writer_add_value(struct gguf_writer *w, const char *key, size_t key_len,
			  const struct gguf_value *v);

/*
 * Declares the next tensor: ne[0] is contiguous and must be a multiple of the
 * type's block size; every dimension >= 1. Offsets are assigned in call order.
 */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims,
			   const uint64_t *ne, uint32_t type);

/* Bytes of the data one tensor needs (0 for an index past the end). */
uint64_t gguf_writer_tensor_bytes(const struct gguf_writer *w, uint64_t index);

/* Writes everything before the tensor data to fd (positioned at the file start). */
int gguf_writer_begin(struct gguf_writer *w, int fd);

/* The next n bytes of tensor data; more than the tensors declared is -EINVAL. */
int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n);

/* Checks that all tensor data was written and flushes; does not close or sync fd. */
int gguf_writer_end(struct gguf_writer *w);

/* Total file size; valid once every tensor is declared. */
uint64_t gguf_writer_file_size(const struct gguf_writer *w);

#endif

/* ggml tensor types: ids, block layouts, half-precision conversion, (de)quantization. */
#ifndef MS_QUANT_H
#define MS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ggml_type {
	GGML_TYPE_F32 = 0,
	GGML_TYPE_F16 = 1,
	GGML_TYPE_Q4_0 = 2,
	GGML_TYPE_Q4_1 = 3,
	GGML_TYPE_Q5_0 = 6,
	GGML_TYPE_Q5_1 = 7,
	GGML_TYPE_Q8_0 = 8,
	GGML_TYPE_Q8_1 = 9,
	GGML_TYPE_Q2_K = 10,
	GGML_TYPE_Q3_K = 11,
	GGML_TYPE_Q4_K = 12,
	GGML_TYPE_Q5_K = 13,
	GGML_TYPE_Q6_K = 14,
	GGML_TYPE_Q8_K = 15,
	GGML_TYPE_BF16 = 30,
};

#define QK8_0 32
#define QK4_0 32

/* Q8_0: 32 weights, one f16 scale: value = qs[j] * d. */
struct block_q8_0 {
	uint16_t d;        /* f16 */
	int8_t qs[QK8_0];
};
_Static_assert(sizeof(struct block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* Q4_0: 32 weights, one f16 scale: elem j = (qs[j]&15)-8, elem j+16 = (qs[j]>>4)-8. */
struct block_q4_0 {
	uint16_t d;        /* f16 */
	uint8_t qs[QK4_0 / 2];
};
_Static_assert(sizeof(struct block_q4_0) == 18, "block_q4_0 is 18 bytes");

struct ggml_type_info {
	const char *name;     /* "F32", "Q8_0", ... */
	uint32_t blck;        /* elements per block */
	uint32_t bytes;       /* bytes per block */
	bool supported;       /* this engine can load and run it */
};

/* NULL for a type id ggml does not define. */
const struct ggml_type_info *ggml_type_get(uint32_t type);

/*
 * Name for messages; "type N" style text for unknown ids is the caller's job
 * (this returns "unknown" for them, never NULL).
 */
const char *ggml_type_name(uint32_t type);

/*
 * Bytes of a row of n elements: 0 on success, -EINVAL when n is not a
 * multiple of the block size or the type is unknown, -EOVERFLOW on overflow.
 */
int ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out);

/* IEEE half and bfloat16 <-> float, exact for every finite value, NaN-preserving. */
float ms_f16_to_f32(uint16_t h);
uint16_t ms_f32_to_f16(float f);     /* round to nearest even */
float ms_bf16_to_f32(uint16_t h);
uint16_t ms_f32_to_bf16(float f);    /* round to nearest even; NaN stays NaN */

/*
 * Row conversion; n must be a multiple of the type's block size.
 * dequantize_row handles every supported type (F32, F16, BF16, Q8_0, Q4_0).
 * quantize_row writes the same types with ggml's reference rounding
 * (Q8_0: d = amax/127, q = round(x/d); Q4_0: d = max/-8 where max is the
 * signed value of largest magnitude, q = min(15, (int)(x/d + 8.5))).
 * Both return 0, or -EINVAL for an unsupported type.
 */
int dequantize_row(uint32_t type, const void *src, float *dst, size_t n);
int quantize_row(uint32_t type, const float *src, void *dst, size_t n);

#endif

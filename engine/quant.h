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

/*
 * K-quants (ggml layout): super-blocks of QK_K = 256 weights. Q4_K and Q5_K
 * hold eight 32-weight sub-blocks with 6-bit scales and mins packed into
 * K_SCALE_SIZE bytes (see ms_get_scale_min_k4); Q6_K holds sixteen
 * 16-weight sub-blocks with signed 8-bit scales.
 */
#define QK_K 256
#define K_SCALE_SIZE 12

/* Q4_K: elem = d*sc*q - dmin*m per 32-weight sub-block; q 4-bit. */
struct block_q4_K {
	uint16_t d;                     /* f16 super-block scale for scales */
	uint16_t dmin;                  /* f16 super-block scale for mins */
	uint8_t scales[K_SCALE_SIZE];   /* 8 scales + 8 mins, 6 bits each */
	uint8_t qs[QK_K / 2];           /* 4 groups of 32 bytes: lo nibble = 64g+l, hi = 64g+32+l */
};
_Static_assert(sizeof(struct block_q4_K) == 144, "block_q4_K is 144 bytes");

/* Q5_K: as Q4_K plus a 5th bit: bit j of qh[l] belongs to element 32j+l. */
struct block_q5_K {
	uint16_t d;                     /* f16 */
	uint16_t dmin;                  /* f16 */
	uint8_t scales[K_SCALE_SIZE];
	uint8_t qh[QK_K / 8];
	uint8_t qs[QK_K / 2];
};
_Static_assert(sizeof(struct block_q5_K) == 176, "block_q5_K is 176 bytes");

/* Q6_K: elem = d*scales[i]*(q-32) per 16-weight sub-block; q 6-bit. */
struct block_q6_K {
	uint8_t ql[QK_K / 2];           /* low 4 bits */
	uint8_t qh[QK_K / 4];           /* high 2 bits */
	int8_t scales[QK_K / 16];
	uint16_t d;                     /* f16 */
};
_Static_assert(sizeof(struct block_q6_K) == 210, "block_q6_K is 210 bytes");

/* Q8_K: activations only; bsums[i] = sum of qs[16i .. 16i+15]. */
struct block_q8_K {
	float d;
	int8_t qs[QK_K];
	int16_t bsums[QK_K / 16];
};
_Static_assert(sizeof(struct block_q8_K) == 292, "block_q8_K is 292 bytes");

/*
 * Unpack the 6-bit scale *sc and min *m of sub-block j (0..7) from the
 * K_SCALE_SIZE-byte array q of a Q4_K/Q5_K block.
 */
void ms_get_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m);

struct ggml_type_info {
	const char *name;     /* "F32", "Q8_0", ... */
	uint32_t blck;        /* elements per block */
	uint32_t bytes;       /* bytes per block */
	bool supported;       /* this engine can load and run it */
};

/* NULL for a type id ggml does not define. */
const struct ggml_type_info *ms_ggml_type_get(uint32_t type);

/*
 * Name for messages; "type N" style text for unknown ids is the caller's job
 * (this returns "unknown" for them, never NULL).
 */
const char *ms_ggml_type_name(uint32_t type);

/*
 * Bytes of a row of n elements: 0 on success, -EINVAL when n is not a
 * multiple of the block size or the type is unknown, -EOVERFLOW on overflow.
 */
int ms_ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out);

/* IEEE half and bfloat16 <-> float, exact for every finite value, NaN-preserving. */
float ms_f16_to_f32(uint16_t h);
uint16_t ms_f32_to_f16(float f);     /* round to nearest even */
float ms_bf16_to_f32(uint16_t h);
uint16_t ms_f32_to_bf16(float f);    /* round to nearest even; NaN stays NaN */

/*
 * Row conversion; n must be a multiple of the type's block size.
 * ms_dequantize_row handles every supported type (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_K, Q5_K, Q6_K) and Q8_K, with ggml's formulas.
 * ms_quantize_row writes the same types with ggml's reference rounding
 * (Q8_0: d = amax/127, q = round(x/d); Q4_0: d = max/-8 where max is the
 * signed value of largest magnitude, q = min(15, (int)(x/d + 8.5))).
 * Q4_K/Q5_K/Q6_K follow ggml's reference quantizers (make_qkx2_quants /
 * make_qx_quants searches; results may differ from ggml's in the last
 * code where float sums round differently). Q8_K: d = max/-127 (max
 * signed, of largest magnitude), q = x/d rounded half to even, bsums[i] =
 * sum of q[16i..16i+15]; an all-zero block has d = 0.
 * Both return 0, or -EINVAL for an unsupported type or a bad n.
 */
int ms_dequantize_row(uint32_t type, const void *src, float *dst, size_t n);
int ms_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

/*
 * The element type of a KV cache by name, "f16" or "f32" in any case (the
 * daemon's config keywords are case-insensitive, and the tools take the
 * same words): *type gets GGML_TYPE_F16 or GGML_TYPE_F32. -EINVAL otherwise.
 */
int ms_kv_type_parse(const char *s, uint32_t *type);

#endif

/* test_quant_pack.c: packing of codes, against a bit-by-bit reference
 * packer, for every bit-width 1..8 and base-3, at sizes that are not
 * multiples of 8, 32 or any group; plus the error paths of unpacking. */
#include <stdio.h>
#include <string.h>

#include "mpq_quant.h"
#include "mpq_test.h"
#include "quant_ref.h"

static mpq_ctx *ctx;

static const int64_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 31, 33, 63, 100, 172, 1001, 4099};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

/* Reference: bit k of code i is bit (i * bits + k) of the stream, LSB first. */
static void ref_pack(const uint8_t *codes, int64_t n, int bits, uint8_t *out, int64_t nbytes) {
    memset(out, 0, (size_t)nbytes);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < bits; k++)
            if ((codes[i] >> k) & 1) {
                int64_t pos = i * bits + k;
                out[pos / 8] |= (uint8_t)(1u << (pos % 8));
            }
}

static void test_bits_roundtrip(void **state) {
    (void)state;
    static uint8_t codes[4099], back[4099], packed[4099], ref[4099];
    qr_rng rng = {11};
    for (int bits = 1; bits <= 8; bits++) {
        mpq_qspec s;
        char text[32];
        snprintf(text, sizeof text, "int:bits=%d", bits);
        MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, text, &s));
        for (int k = 0; k < NSIZES; k++) {
            int64_t n = sizes[k];
            for (int64_t i = 0; i < n; i++)
                codes[i] = (uint8_t)(qr_next(&rng) & ((1u << bits) - 1));
            int64_t nb = mpq_quant_packed_bytes(&s, n);
            assert_int_equal(nb, (n * bits + 7) / 8);
            memset(packed, 0xA5, sizeof packed);
            MPQ_ASSERT_OK(ctx, mpq_quant_pack(ctx, &s, codes, n, packed));
            ref_pack(codes, n, bits, ref, nb);
            if (memcmp(packed, ref, (size_t)nb) != 0)
                fail_msg("bits=%d n=%lld: packed stream differs from the reference", bits,
                         (long long)n);
            memset(back, 0xFF, sizeof back);
            MPQ_ASSERT_OK(ctx, mpq_quant_unpack(ctx, &s, packed, nb, n, back));
            if (memcmp(back, codes, (size_t)n) != 0)
                fail_msg("bits=%d n=%lld: unpack(pack(x)) != x", bits, (long long)n);
            if (n > 0) {
                codes[n - 1] = (uint8_t)(1u << bits); /* out of range (bits 8: wraps to 0) */
                if (bits < 8)
                    assert_int_equal(mpq_quant_pack(ctx, &s, codes, n, packed), MPQ_ERR_ARG);
            }
            if (n > 0)
                assert_int_equal(mpq_quant_unpack(ctx, &s, packed, nb + 1, n, back),
                                 MPQ_ERR_FORMAT);
        }
    }
}

static void test_base3_roundtrip(void **state) {
    (void)state;
    static uint8_t codes[4099], back[4099], packed[4099];
    qr_rng rng = {12};
    mpq_qspec s;
    MPQ_ASSERT_OK(ctx, mpq_qspec_parse(ctx, "ternary:pack=base3", &s));
    for (int k = 0; k < NSIZES; k++) {
        int64_t n = sizes[k];
        for (int64_t i = 0; i < n; i++)
            codes[i] = (uint8_t)(qr_next(&rng) % 3);
        int64_t nb = mpq_quant_packed_bytes(&s, n);
        assert_int_equal(nb, (n + 4) / 5);
        MPQ_ASSERT_OK(ctx, mpq_quant_pack(ctx, &s, codes, n, packed));
        for (int64_t b = 0; b < nb; b++) { /* reference: base-3 digits, least significant first */
            unsigned v = 0, m = 1;
            for (int64_t i = 5 * b; i < n && i < 5 * b + 5; i++, m *= 3)
                v += codes[i] * m;
            if (packed[b] != v)
                fail_msg("n=%lld byte %lld: %u, expected %u", (long long)n, (long long)b, packed[b],
                         v);
        }
        MPQ_ASSERT_OK(ctx, mpq_quant_unpack(ctx, &s, packed, nb, n, back));
        assert_memory_equal(back, codes, (size_t)n);
        if (n > 0) {
            codes[0] = 3;
            assert_int_equal(mpq_quant_pack(ctx, &s, codes, n, packed), MPQ_ERR_ARG);
            packed[0] = 243;
            assert_int_equal(mpq_quant_unpack(ctx, &s, packed, nb, n, back), MPQ_ERR_FORMAT);
            assert_non_null(strstr(ctx->err_msg, "243"));
        }
    }
    /* 1.6 bits per weight for a multiple of 5 */
    assert_int_equal(mpq_quant_packed_bytes(&s, 1000), 200);
}

int main(int argc, char **argv) {
    ctx = mpq_test_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bits_roundtrip),
        cmocka_unit_test(test_base3_roundtrip),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    return mpq_test_finish(&ctx, failures);
}

/*
 * libFuzzer harness for src/net/json.c: the JSON reader, base64url and the
 * JWS splitter, on exact-size heap copies so ASan sees any read past len.
 *
 * Invariants checked (abort() when broken): every node's subtree ends after
 * it and within the array, a container's members walk to its end, strings
 * are as long as they say; base64url decoding re-encodes to its input (the
 * decoder accepts one spelling per value).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       src/net/json.c t/fuzz/fuzz_json.c -o fuzz_json
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/json.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static void check_tree(const lg_json_t *j)
{
    for (size_t i = 0; i < j->n; i++) {
        const lg_json_node_t *nd = &j->nodes[i];
        CHECK(nd->next > i && nd->next <= j->n);
        if (nd->type == LG_JSON_STRING || nd->type == LG_JSON_NUMBER)
            CHECK(strlen(nd->s) == nd->n);
        if (nd->type == LG_JSON_ARRAY || nd->type == LG_JSON_OBJECT) {
            size_t k = 0, c = i + 1;
            while (c < nd->next) {
                CHECK(j->nodes[c].next <= nd->next);
                CHECK((nd->type == LG_JSON_OBJECT) == (j->nodes[c].key != NULL));
                c = j->nodes[c].next;
                k++;
            }
            CHECK(c == nd->next && k == nd->nkids);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    memcpy(in, data, size);

    lg_json_t j;
    if (lg_json_parse(&j, in, size, 512, 16, NULL, 0) == 0)
        check_tree(&j);
    lg_json_free(&j);

    unsigned char *dec = malloc(size + 1);
    long n = dec ? lg_b64url_decode(in, size, dec, size + 1) : -1;
    if (n >= 0) {
        char *re = malloc(lg_b64url_len((size_t)n) + 1);
        CHECK(re != NULL);
        lg_b64url_encode(dec, (size_t)n, re);
        CHECK(strlen(re) == size && memcmp(re, in, size) == 0);
        free(re);
    }
    free(dec);

    lg_jws_t t;
    const char *why = NULL;
    if (lg_jws_decode(&t, in, size, &why) == 0) {
        CHECK(t.signed_len < size);
        CHECK(t.header.n > 0 && t.header.nodes[0].type == LG_JSON_OBJECT);
        check_tree(&t.header);
        check_tree(&t.payload);
    } else
        CHECK(why != NULL);
    lg_jws_free(&t);
    free(in);
    return 0;
}

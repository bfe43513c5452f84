/*
 * libFuzzer harness for the htpasswd reader (src/net/htpasswd.c): a file
 * of arbitrary lines must load or be refused with FILE:LINE, never crash or
 * leak; a loaded file's users are checked against a password once (the
 * hash schemes' decoders see what the file holds).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -include config.h -Isrc -I. \
 *       src/net/htpasswd.c src/core/hash.c t/fuzz/fuzz_htpasswd.c -lcrypto -lcrypt
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/htpasswd.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static char path[64];
    if (path[0] == '\0')
        snprintf(path, sizeof(path), "/tmp/legate-fuzz-htpasswd.%d", (int)getpid());
    if (n > 16384)
        return 0;
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    char err[2048];
    err[0] = '\0';
    lg_htpasswd_t *h = lg_htpasswd_load(path, err, sizeof(err));
    if (h == NULL) {
        CHECK(strstr(err, path) != NULL);       /* a refusal names the file */
        return 0;
    }
    /* the first user, if any, against a wrong password: every decoder runs */
    const char *nl = memchr(data, ':', n);
    if (nl && nl > (const char *)data && (size_t)(nl - (const char *)data) < 64) {
        char user[64];
        memcpy(user, data, (size_t)(nl - (const char *)data));
        user[nl - (const char *)data] = '\0';
        (void)lg_htpasswd_check(h, user, "not the password", 0);
    }
    lg_htpasswd_free(h);
    return 0;
}

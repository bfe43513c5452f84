/*
 * libFuzzer harness for the configuration layer (src/conf/): libconfig's
 * parser under legate's loader -- directive tables, types and bounds,
 * inheritance, routes, upstreams, listeners, templates compiled to
 * variable indexes -- on arbitrary text.  Every input must load or be
 * refused with FILE:LINE messages, never crash or leak; a loaded
 * configuration is freed again.  Variable names are judged by a stand-in
 * for the pipeline's table (conf/ does not see pipeline/).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -include config.h -Isrc -I. \
 *       src/conf/*.c src/core/arena.c src/core/log.c src/core/hash.c \
 *       t/fuzz/fuzz_conf.c -lconfig -o fuzz_conf
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static int lookup(const char *name, size_t n, size_t *arg)
{
    static const char *const known[] = { "remote_addr", "host", "request_uri", "status", "uri" };
    *arg = n;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i]) == n && memcmp(known[i], name, n) == 0)
            return (int)i;
    if (n > 5 && memcmp(name, "http_", 5) == 0) {
        *arg = 5;
        return 10;
    }
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static char path[64], prefix[64];
    if (path[0] == '\0') {
        snprintf(prefix, sizeof(prefix), "/tmp/legate-fuzz-conf.%d", (int)getpid());
        snprintf(path, sizeof(path), "%s.conf", prefix);
        lg_conf_set_var_lookup(lookup);
    }
    if (n > 65536)
        return 0;
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    char err[4096];
    err[0] = '\0';
    lg_conf_t *c = lg_conf_load(path, prefix, err, sizeof(err));
    CHECK(c != NULL || err[0] != '\0');        /* a refusal always says why */
    lg_conf_free(c);
    return 0;
}

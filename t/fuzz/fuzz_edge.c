/*
 * libFuzzer harness for what the edge features parse from the network:
 * a Range field against a file size and an If-None-Match / If-Match list
 * (feature/static.c), a Set-Cookie value from an upstream through
 * proxy_cookie_domain / proxy_cookie_path (pipeline/headers.c), and a
 * value looked up in a map (pipeline/vars.c).  The first byte chooses.
 *
 *   built by t/fuzz/run.sh with every file of src/ (as fuzz_h2)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "feature/static.h"
#include "pipeline/headers.h"
#include "pipeline/vars.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static lg_map_t map;
static lg_map_entry_t entries[5];

static void map_init(void)
{
    static int done;
    static const struct { lg_map_kind_t k; const char *key; } e[] = {
        { LG_MAPK_EXACT, "example.com" }, { LG_MAPK_LEADING, ".example.com" },
        { LG_MAPK_TRAILING, "www.example." }, { LG_MAPK_REGEX, "^([a-z]+)-([0-9]*)$" },
        { LG_MAPK_REGEX, "x" },
    };
    if (done++)
        return;
    for (size_t i = 0; i < 5; i++) {
        entries[i].kind = e[i].k;
        entries[i].key = (char *)e[i].key;
        entries[i].len = strlen(e[i].key);
        if (e[i].k == LG_MAPK_REGEX) {
            entries[i].re = malloc(sizeof(regex_t));
            CHECK(entries[i].re && regcomp(entries[i].re, e[i].key, REG_EXTENDED | REG_ICASE) == 0);
        }
    }
    map.v = entries;
    map.n = 5;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1 || n > 8192)
        return 0;
    const char *v = (const char *)data + 1;
    size_t vn = n - 1;
    switch (data[0] % 4) {
    case 0: {
        int64_t size = vn ? (int64_t)(data[1] * 1000003u) : 0, from = -1, to = -1;
        int rc = lg_static_range(v, vn, size, &from, &to);
        CHECK(rc >= -1 && rc <= 1);
        if (rc == 1)
            CHECK(from >= 0 && from < to && to <= size);
        break;
    }
    case 1:
        CHECK(lg_static_etag_listed(v, vn, "\"5f-1a\"", data[0] & 4) >= 0);
        break;
    case 2: {
        static char *dom_v[] = { "backend.internal example.com", ".Other.Test .x.test" };
        static char *path_v[] = { "/app/ /", "/ /root/" };
        static lg_strv_t dom = { dom_v, 2 }, path = { path_v, 2 };
        lg_common_t c;
        memset(&c, 0, sizeof(c));
        c.proxy_cookie_domain = &dom;
        c.proxy_cookie_path = &path;
        lg_arena_t a;
        lg_arena_init(&a, 1024, 0);
        /* a parsed field value holds no CR, LF or NUL */
        if (memchr(v, '\r', vn) || memchr(v, '\n', vn) || memchr(v, '\0', vn)) {
            lg_arena_destroy(&a);
            break;
        }
        size_t len = 0;
        char *line = lg_headers_set_cookie(&a, &c, v, vn, &len);
        if (line) {
            CHECK(len >= 14 && memcmp(line, "Set-Cookie: ", 12) == 0);
            CHECK(line[len - 2] == '\r' && line[len - 1] == '\n');
            CHECK(memchr(line, '\n', len - 1) == NULL);
        }
        lg_arena_destroy(&a);
        break;
    }
    case 3: {
        map_init();
        char *s = malloc(vn + 1);
        CHECK(s);
        memcpy(s, v, vn);
        s[vn] = '\0';
        regmatch_t caps[10];
        const lg_map_entry_t *e = lg_map_match(&map, s, strlen(s), caps);
        CHECK(e == NULL || (e >= entries && e < entries + 5));
        free(s);
        break;
    }
    }
    return 0;
}

#include "proxy/upstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/balance.h"

int lg_upstreams_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen)
{
    for (size_t u = 0; u < conf->nupstreams; u++) {
        lg_upstream_t *up = &conf->upstreams[u];
        uint64_t h = lg_hash64(up->name, strlen(up->name), 0);
        for (size_t i = 0; i < up->nservers; i++)
            h = lg_hash64(up->servers[i].addr.text, strlen(up->servers[i].addr.text), h);
        char name[LG_SHM_NAME_MAX + 1];
        snprintf(name, sizeof(name), "up-%016llx", (unsigned long long)h);
        int fresh = 0;
        up->state = lg_shm_zone(shm, name, up->nservers * sizeof(lg_upstate_t), &fresh);
        if (up->state == NULL) {
            snprintf(err, errlen, "shared memory is too small for upstream \"%s\" "
                     "(raise shared_memory_size)", up->name);
            return -1;
        }
        if (up->balance == LG_BAL_HASH && up->maglev == NULL) {
            lg_bal_server_t bs[64];
            const char *ids[64];
            for (size_t k = 0; k < up->nservers; k++) {
                bs[k] = (lg_bal_server_t){ .weight = (uint32_t)up->servers[k].weight, .usable = 1 };
                ids[k] = up->servers[k].addr.text;
            }
            up->maglev = malloc(LG_MAGLEV_M * sizeof(uint16_t));
            if (up->maglev == NULL ||
                lg_maglev_build(up->maglev, LG_MAGLEV_M, bs, up->nservers, ids, err, errlen) < 0) {
                if (up->maglev == NULL)
                    snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

void lg_upstreams_clear_slot(const lg_conf_t *conf, int slot)
{
    if (slot < 0 || slot >= LG_UPSTATE_SLOTS)
        return;
    for (size_t u = 0; u < conf->nupstreams; u++) {
        lg_upstate_t *st = conf->upstreams[u].state;
        if (st == NULL)
            continue;
        for (size_t i = 0; i < conf->upstreams[u].nservers; i++)
            atomic_store_explicit(&st[i].active[slot], 0, memory_order_relaxed);
    }
}

/*
 * The features the pipeline is made of, and the engine that runs their
 * handlers phase by phase (see request.h for the phases and the handler
 * contract).
 *
 * Handlers are kept per phase in registration order; the table is filled
 * once per process (lg_feature_register, from proc/features.c) before any
 * request exists and never changes after, so running a phase is a walk
 * over a small array with no lookup by name.
 */
#include "pipeline/request.h"

#define MAX_HANDLERS 16
#define MAX_FEATURES 24

static struct {
    lg_handler_t fn[MAX_HANDLERS];
    const char  *who[MAX_HANDLERS];
    unsigned     n;
} phases[LG_PH_MAX];

static const lg_feature_t *features[MAX_FEATURES];
static unsigned nfeatures;
static int nslots;

const char *lg_feature_phase_name(lg_phase_t p)
{
    switch (p) {
    case LG_PH_POST_READ:      return "post-read";
    case LG_PH_ACCESS:         return "access";
    case LG_PH_ROUTE:          return "route";
    case LG_PH_CACHE:          return "cache";
    case LG_PH_CONTENT:        return "content";
    case LG_PH_REQUEST_BODY:   return "request-body";
    case LG_PH_RESPONSE:       return "response";
    case LG_PH_BODY:           return "body";
    case LG_PH_UPSTREAM_ERROR: return "upstream-error";
    case LG_PH_LOG:            return "log";
    case LG_PH_MAX:            break;
    }
    return "none";
}

void lg_feature_register(const lg_feature_t *f)
{
    LG_BUG_ON(nfeatures == MAX_FEATURES);
    features[nfeatures++] = f;
    if (f->ctx_slot) {
        LG_BUG_ON(nslots == LG_CTX_MAX);
        *f->ctx_slot = nslots++;
    }
    for (size_t i = 0; i < sizeof(f->handlers) / sizeof(f->handlers[0]) && f->handlers[i].fn; i++) {
        lg_phase_t p = f->handlers[i].phase;
        LG_BUG_ON(p >= LG_PH_MAX || phases[p].n == MAX_HANDLERS);
        phases[p].who[phases[p].n] = f->name;
        phases[p].fn[phases[p].n++] = f->handlers[i].fn;
    }
}

int lg_feature_init_all(void)
{
    for (unsigned i = 0; i < nfeatures; i++)
        if (features[i]->init && features[i]->init() < 0) {
            lg_error("feature %s failed to start", features[i]->name);
            return -1;
        }
    return 0;
}

/*
 * Run handlers from (r->phase, r->ph_next) up to and including `last`.
 * LG_OK: all ran, r->phase is the one after `last`; LG_AGAIN: a handler
 * suspended it; LG_DONE: answered, or handed to a stage (r->phase NONE).
 */
int lg_feature_run_phases(lg_req_t *r, lg_phase_t last)
{
    while (r->phase <= last) {
        lg_phase_t p = r->phase;
        while (r->ph_next < phases[p].n) {
            unsigned i = r->ph_next++;
            int rc = phases[p].fn[i](r);
            if (rc == LG_OK || rc == LG_DECLINED)
                continue;
            if (rc == LG_AGAIN)
                return LG_AGAIN;        /* the handler resumes it */
            if (rc == LG_ERROR) {
                lg_error("%s: request failed in the %s phase", phases[p].who[i], lg_feature_phase_name(p));
                lg_respond_error(r, 500);
            }
            r->phase = LG_PH_NONE;
            return LG_DONE;
        }
        r->phase = (lg_phase_t)(p + 1);
        r->ph_next = 0;
    }
    return LG_OK;
}

/* Run one of the response-side phases in full; LG_DONE if a handler answered. */
int lg_feature_run_one(lg_req_t *r, lg_phase_t p)
{
    for (unsigned i = 0; i < phases[p].n; i++) {
        int rc = phases[p].fn[i](r);
        if (rc == LG_DONE)
            return LG_DONE;
        if (rc == LG_ERROR)
            return LG_ERROR;
    }
    return LG_OK;
}

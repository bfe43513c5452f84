/*
 * Listening sockets, owned by the master for its whole life.
 *
 * For every distinct listen address there is one SO_REUSEPORT socket per
 * worker slot (the kernel spreads connections over them); a unix-domain
 * address has a single socket that every worker shares.  Worker w of a
 * generation with n workers serves every slot s with s % n == w, so shrinking
 * the worker count never closes a socket (closing a SO_REUSEPORT socket drops
 * the connections queued on it, and this kernel has tcp_migrate_req = 0).
 * Sockets of an address that left the configuration are closed on reload.
 * They are inherited across a binary upgrade through LEGATE_LISTEN_FDS.
 *
 * QUIC's UDP sockets are the exception, where the kernel can steer
 * datagrams by connection ID (net/steer.h): each generation of workers gets
 * fresh ones (a datagram cannot wait in a queue for a TCP-like hand-over,
 * and a connection must stay with the worker that has its state), and the
 * group's program sends a connection's datagrams to its socket and new
 * connections to the newest generation's.  Without steering (no CAP_BPF)
 * they are kept and shared as TCP's are.
 */
#ifndef LEGATE_NET_LISTEN_H
#define LEGATE_NET_LISTEN_H

#include "conf/conf.h"

typedef struct lg_listener {
    struct sockaddr_storage ss;
    socklen_t               len;
    char                    text[128];
    int                     fds[512];   /* per slot; -1 = not created yet */
    int                     nfds;       /* slots created */
    int                     used;       /* seen in the current conf (mark) */
    int                     udp;        /* datagram sockets (a stream server's udp listen) */
    int                     quic;       /* the UDP port of a quic listen (mark, as used) */
    int                     imported;   /* fds came from the previous binary */
    int                     born;       /* made by the last sync (its sockets are new) */
    int                     steer_map;  /* the group's steering map, or -1 (the master's; closed in workers) */
    int                     steered;    /* the group's program steers by the fds' ids */
    unsigned                bank;       /* the fds' ids are bank * 512 + slot */
} lg_listener_t;

/*
 * Make sure every bind of `conf` has sockets for `slots` slots; close those
 * no longer configured.  Returns 0, or -1 with a message in err (and nothing
 * closed: the old generation keeps serving).
 */
int  lg_listeners_sync(const lg_conf_t *conf, int slots, char *err, size_t errlen);
/* The socket a worker uses for bind b and slot s, or -1. */
int  lg_listener_fd(const lg_conf_t *conf, size_t b, int slot);
/* The UDP socket of bind b's address for QUIC (b has quic), or -1: the
 * address's UDP listener, as a stream server's UDP address has one. */
int  lg_listener_quic_fd(const lg_conf_t *conf, size_t b, int slot);
/* Just before a generation of workers starts: QUIC sockets for it, and
 * the group's steering program pointed at them (see above). */
void lg_listeners_new_generation(const lg_conf_t *conf, int slots);
/* The steering id of bind b's QUIC socket of slot s (for its connection
 * IDs), or -1 when the kernel does not steer. */
int  lg_listener_quic_id(const lg_conf_t *conf, size_t b, int slot);
/* For a binary upgrade: clear FD_CLOEXEC and export LEGATE_LISTEN_FDS. */
int  lg_listeners_export(void);
/* At startup: adopt sockets named in LEGATE_LISTEN_FDS, if any. */
void lg_listeners_import(void);
/* Close every socket (master exit). */
void lg_listeners_close_all(void);
/* Worker side: close all the sockets this worker does not serve. */
void lg_listeners_close_except(const lg_conf_t *conf, int worker, int nworkers);
/* Number of listeners, and access for workers. */
size_t         lg_listeners_count(void);
lg_listener_t *lg_listener_at(size_t i);
lg_listener_t *lg_listener_find(const lg_addr_t *a, int udp);

#endif

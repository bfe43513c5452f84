/*
 * QUIC connection steering (steer.c): the kernel picks, for every datagram
 * that reaches a SO_REUSEPORT group of QUIC sockets, the socket named by
 * the connection ID legate gave the connection, so a client that changed
 * address (a NAT rebinding, a move to another network) and a connection
 * that began before a reload reach the worker that has it.
 *
 * A socket has an id, a bank (one per generation of workers, so the old
 * generation's sockets and the new one's differ) times 512 plus its slot.
 * The id goes into the first bytes of every connection ID a worker issues
 * (lg_steer_cid_mark), with a check byte, and an eBPF program of type
 * SK_REUSEPORT attached to the group reads it from the datagram and selects
 * the socket from a REUSEPORT_SOCKARRAY map.  A datagram without a valid
 * id of a live socket (a client's first Initial, whose DCID the client
 * chose) goes to the current bank's socket by the kernel's flow hash, so
 * new connections land on the new generation only.
 *
 * It needs CAP_BPF (root): lg_steer_new fails otherwise and legate runs
 * as without it (the worker sockets are then shared across generations).
 */
#ifndef LEGATE_NET_STEER_H
#define LEGATE_NET_STEER_H

#include <stddef.h>
#include <stdint.h>

#define LG_STEER_BANKS 32               /* generations whose sockets can be alive at once */
#define LG_STEER_IDS   (LG_STEER_BANKS * 512)
#define LG_STEER_CID_BYTES 3            /* id (2 bytes, big-endian) and its check byte */

/* A map for one address's group.  Its fd, or -1 with why filled. */
int  lg_steer_new(char *why, size_t whylen);
/* Name socket fd (bound, in the group) by id in map. 0 or -1 (errno). */
int  lg_steer_add(int map, unsigned id, int fd);
/* Load the program for this map, steering unmarked datagrams to ids
 * [base, base + n) by flow hash, and attach it to fd's group (replacing the
 * group's program).  0, or -1 with why filled. */
int  lg_steer_attach(int map, int fd, unsigned base, unsigned n, char *why, size_t whylen);
/* Take the program off fd's group (the kernel's flow hash again). */
void lg_steer_detach(int fd);
/* Write id into the first LG_STEER_CID_BYTES of a connection ID. */
void lg_steer_cid_mark(uint8_t *cid, unsigned id);
/* The id a connection ID carries, or -1: what the program reads. */
int  lg_steer_cid_id(const uint8_t *cid, size_t len);

#endif

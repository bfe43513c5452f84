/*
 * Return codes shared by every layer, as nginx's NGX_OK / NGX_AGAIN: a step
 * that cannot go on without an event says so in its return value, so no
 * caller tests errno for EAGAIN or a handshake's want-read / want-write.
 */
#ifndef LEGATE_CORE_RC_H
#define LEGATE_CORE_RC_H

#define LG_OK        0          /* done; go on */
#define LG_ERROR   (-1)         /* failed (errno or a message says why) */
#define LG_AGAIN   (-2)         /* would block: the end's want flag says on what */
#define LG_DONE    (-4)         /* the request has been answered: skip the rest */
#define LG_DECLINED (-5)        /* not mine: let the next handler look */

#endif

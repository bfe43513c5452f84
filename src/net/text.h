/*
 * Small text helpers shared by the files that read rule lists (text.c).
 */
#ifndef LEGATE_NET_TEXT_H
#define LEGATE_NET_TEXT_H

#include <stddef.h>

static inline int lg_text_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static inline unsigned char lg_text_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* A whole regular file (at most 1 GiB) into a NUL-terminated malloc'd
 * buffer, its length in *lenp; NULL with a message naming the file. */
char *lg_text_read_file(const char *path, size_t *lenp, char *err, size_t errlen);

#endif

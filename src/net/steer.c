/*
 * QUIC connection steering: see steer.h.
 *
 * The program is a few dozen instructions written out here rather than
 * compiled from C with clang -target bpf: it is short, it would otherwise
 * need a BPF toolchain and libbpf at build time, and its constants (the
 * current bank's ids) are filled in per generation.  Each generation
 * loads a fresh program and attaches it, which replaces the group's
 * previous one atomically; the map stays, with the old bank's sockets
 * still in it until they close.
 */
#include "net/steer.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#endif

#define CHECK_SALT 0x5a

void lg_steer_cid_mark(uint8_t *cid, unsigned id)
{
    cid[0] = (uint8_t)(id >> 8);
    cid[1] = (uint8_t)id;
    cid[2] = (uint8_t)(cid[0] ^ cid[1] ^ CHECK_SALT);
}

int lg_steer_cid_id(const uint8_t *cid, size_t len)
{
    if (len < LG_STEER_CID_BYTES || (uint8_t)(cid[0] ^ cid[1] ^ CHECK_SALT) != cid[2])
        return -1;
    unsigned id = (unsigned)cid[0] << 8 | cid[1];
    return id < LG_STEER_IDS ? (int)id : -1;
}

#if defined(__linux__) && defined(SO_ATTACH_REUSEPORT_EBPF)

static long sys_bpf(int cmd, union bpf_attr *a)
{
    return syscall(__NR_bpf, cmd, a, sizeof(*a));
}

int lg_steer_new(char *why, size_t whylen)
{
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY;
    a.key_size = 4;
    a.value_size = 8;
    a.max_entries = LG_STEER_IDS;
    int fd = (int)sys_bpf(BPF_MAP_CREATE, &a);
    if (fd < 0)
        snprintf(why, whylen, "bpf(MAP_CREATE): %s", strerror(errno));
    return fd;
}

int lg_steer_add(int map, unsigned id, int fd)
{
    uint32_t key = id;
    uint64_t val = (uint64_t)fd;
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&val;
    a.flags = BPF_ANY;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0 ? -1 : 0;
}

/* struct bpf_insn by hand: the kernel-internal macros are not in the uapi */
#define INS(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define MOV64_REG(d, s)    INS(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i)    INS(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ALU64_IMM(op, d, i) INS(BPF_ALU64 | (op) | BPF_K, d, 0, 0, i)
#define ALU64_REG(op, d, s) INS(BPF_ALU64 | (op) | BPF_X, d, s, 0, 0)
#define ALU32_IMM(op, d, i) INS(BPF_ALU | (op) | BPF_K, d, 0, 0, i)
#define LDX(sz, d, s, o)   INS(BPF_LDX | (sz) | BPF_MEM, d, s, o, 0)
#define STX(sz, d, s, o)   INS(BPF_STX | (sz) | BPF_MEM, d, s, o, 0)
#define JMP_IMM(op, d, i, o) INS(BPF_JMP | (op) | BPF_K, d, 0, o, i)
#define JMP_REG(op, d, s, o) INS(BPF_JMP | (op) | BPF_X, d, s, o, 0)
#define CALL(f)            INS(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT()             INS(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
/* a map's fd as a 64-bit immediate: two instructions */
#define LD_MAP(d, fd)      INS(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd), INS(0, 0, 0, 0, 0)

#define UDP_HDR 8
#define R0 BPF_REG_0
#define R1 BPF_REG_1
#define R2 BPF_REG_2
#define R3 BPF_REG_3
#define R4 BPF_REG_4
#define R5 BPF_REG_5
#define R6 BPF_REG_6
#define R7 BPF_REG_7
#define R8 BPF_REG_8
#define FP BPF_REG_10

/* bpf_skb_load_bytes(ctx, off_reg_or_imm, fp - 8, len): r0 = 0 on success */
#define LOAD_BYTES_IMM(off, len) \
    MOV64_REG(R1, R6), MOV64_IMM(R2, off), MOV64_REG(R3, FP), ALU64_IMM(BPF_ADD, R3, -8), \
    MOV64_IMM(R4, len), CALL(BPF_FUNC_skb_load_bytes)

int lg_steer_attach(int map, int fd, unsigned base, unsigned n, char *why, size_t whylen)
{
    if (n == 0)
        n = 1;
    /*
     * r6 ctx; r7 the QUIC first byte; r8 where the DCID starts.  Jump
     * offsets count instructions after the jump; the labels below say
     * where each lands (checked by the verifier: a wrong one fails to load).
     */
    struct bpf_insn prog[] = {
        MOV64_REG(R6, R1),
        LOAD_BYTES_IMM(UDP_HDR, 1),                      /* 1..6 */
        JMP_IMM(BPF_JNE, R0, 0, 38),                     /* 7 -> hash (46) */
        LDX(BPF_B, R7, FP, -8),                          /* 8 */
        MOV64_IMM(R8, UDP_HDR + 1),                      /* 9: short header: DCID after the byte */
        JMP_IMM(BPF_JSET, R7, 0x80, 1),                  /* 10 -> long (12) */
        JMP_IMM(BPF_JA, 0, 0, 9),                        /* 11 -> have (21) */
        /* long: version (4), DCID length, DCID */
        LOAD_BYTES_IMM(UDP_HDR + 5, 1),                  /* 12..17 */
        JMP_IMM(BPF_JNE, R0, 0, 27),                     /* 18 -> hash (46) */
        LDX(BPF_B, R2, FP, -8),                          /* 19 */
        MOV64_IMM(R8, UDP_HDR + 6),                      /* 20 */
        /* have (21): the first three DCID bytes */
        MOV64_REG(R1, R6), MOV64_REG(R2, R8), MOV64_REG(R3, FP), ALU64_IMM(BPF_ADD, R3, -8),
        MOV64_IMM(R4, LG_STEER_CID_BYTES), CALL(BPF_FUNC_skb_load_bytes),   /* 21..26 */
        JMP_IMM(BPF_JNE, R0, 0, 18),                     /* 27 -> hash (46) */
        LDX(BPF_B, R2, FP, -8),                          /* 28 */
        LDX(BPF_B, R3, FP, -7),                          /* 29 */
        LDX(BPF_B, R4, FP, -6),                          /* 30 */
        MOV64_REG(R5, R2),                               /* 31 */
        ALU64_REG(BPF_XOR, R5, R3),                      /* 32 */
        ALU64_IMM(BPF_XOR, R5, CHECK_SALT),              /* 33 */
        JMP_REG(BPF_JNE, R5, R4, 11),                    /* 34 -> hash (46) */
        ALU64_IMM(BPF_LSH, R2, 8),                       /* 35 */
        ALU64_REG(BPF_OR, R2, R3),                       /* 36: the id */
        STX(BPF_W, FP, R2, -16),                         /* 37 */
        MOV64_REG(R1, R6),                               /* 38 */
        LD_MAP(R2, map),                                 /* 39, 40 */
        MOV64_REG(R3, FP),                               /* 41 */
        ALU64_IMM(BPF_ADD, R3, -16),                     /* 42 */
        MOV64_IMM(R4, 0),                                /* 43 */
        CALL(BPF_FUNC_sk_select_reuseport),              /* 44 */
        JMP_IMM(BPF_JEQ, R0, 0, 11),                     /* 45 -> pass (57) */
        /* hash (46): no id, or one of a socket gone (its worker exited):
         * the current bank, base + flow hash % n */
        LDX(BPF_W, R2, R6, offsetof(struct sk_reuseport_md, hash)),   /* 46 */
        ALU32_IMM(BPF_MOD, R2, (int32_t)n),              /* 47 */
        ALU64_IMM(BPF_ADD, R2, (int32_t)base),           /* 48 */
        STX(BPF_W, FP, R2, -16),                         /* 49 */
        MOV64_REG(R1, R6),                               /* 50 */
        LD_MAP(R2, map),                                 /* 51, 52 */
        MOV64_REG(R3, FP),                               /* 53 */
        ALU64_IMM(BPF_ADD, R3, -16),                     /* 54 */
        MOV64_IMM(R4, 0),                                /* 55 */
        /* if this fails too (the bank is not filled yet), the kernel
         * chooses by its hash as without a program */
        CALL(BPF_FUNC_sk_select_reuseport),              /* 56 */
        /* pass (57) */
        MOV64_IMM(R0, SK_PASS),
        EXIT(),
    };
    char log[4096] = "";
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = sizeof(prog) / sizeof(prog[0]);
    a.license = (uint64_t)(uintptr_t)"GPL";
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = sizeof(log);
    a.log_level = 1;
    int pfd = (int)sys_bpf(BPF_PROG_LOAD, &a);
    if (pfd < 0) {
        /* the verifier's last line says why */
        size_t l = strlen(log);
        while (l > 0 && log[l - 1] == '\n')
            log[--l] = '\0';
        const char *last = strrchr(log, '\n');
        snprintf(why, whylen, "bpf(PROG_LOAD): %s%s%s", strerror(errno), *log ? ": " : "",
                 last ? last + 1 : log);
        return -1;
    }
    int rc = setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &pfd, sizeof(pfd));
    if (rc < 0)
        snprintf(why, whylen, "SO_ATTACH_REUSEPORT_EBPF: %s", strerror(errno));
    close(pfd);                 /* the group holds the program */
    return rc < 0 ? -1 : 0;
}

void lg_steer_detach(int fd)
{
    int zero = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero));
}

#else

void lg_steer_detach(int fd)
{
    (void)fd;
}

int lg_steer_new(char *why, size_t whylen)
{
    snprintf(why, whylen, "not available on this system");
    return -1;
}

int lg_steer_add(int map, unsigned id, int fd)
{
    (void)map, (void)id, (void)fd;
    errno = ENOSYS;
    return -1;
}

int lg_steer_attach(int map, int fd, unsigned base, unsigned n, char *why, size_t whylen)
{
    (void)map, (void)fd, (void)base, (void)n;
    snprintf(why, whylen, "not available on this system");
    return -1;
}

#endif

/*
 * Test-only LD_PRELOAD shim for running the ARM builds under qemu-user 7.2 (Debian 12).
 *
 * The serialport crate sets the UART's speed with the termios2 ioctls (TCGETS2,
 * TCSETS2, ...), which the Linux kernel on the box implements but qemu-user 7.2 does not
 * emulate: under qemu every serial open fails with ENOSYS ("Function not implemented"),
 * even on the simulator's pty. This shim, preloaded into the emulated program only
 * (scripts/cross-build.sh sets QEMU_SET_ENV=LD_PRELOAD=...), answers those four ioctls
 * with the classic TCGETS/TCSETS* ones, mapping the speed to and from a Bnnn code. It is
 * never part of what ships.
 *
 * It removes LD_PRELOAD from its own environment at load time: the tests start
 * qemu-aarch64 (a host program) to run branchd, and the host loader must not see an ARM
 * library in LD_PRELOAD; QEMU_SET_ENV, still in the environment, preloads the shim
 * again into that emulated child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's structures (asm-generic/termbits.h): no speeds in termios. */
struct k_termios {
    unsigned int c_iflag, c_oflag, c_cflag, c_lflag;
    unsigned char c_line;
    unsigned char c_cc[19];
};
struct k_termios2 {
    unsigned int c_iflag, c_oflag, c_cflag, c_lflag;
    unsigned char c_line;
    unsigned char c_cc[19];
    unsigned int c_ispeed, c_ospeed;
};

#define K_TCGETS 0x5401UL
#define K_TCSETS 0x5402UL
#define K_TCSETSW 0x5403UL
#define K_TCSETSF 0x5404UL
#define K_TCGETS2 0x802c542aUL
#define K_TCSETS2 0x402c542bUL
#define K_TCSETSW2 0x402c542cUL
#define K_TCSETSF2 0x402c542dUL
#define K_CBAUD 0010017U
#define K_BOTHER 0010000U
#define K_CIBAUD (K_CBAUD << 16)

static const struct { unsigned int code, speed; } speeds[] = {
    {0000000, 0}, {0000001, 50}, {0000002, 75}, {0000003, 110}, {0000004, 134},
    {0000005, 150}, {0000006, 200}, {0000007, 300}, {0000010, 600}, {0000011, 1200},
    {0000012, 1800}, {0000013, 2400}, {0000014, 4800}, {0000015, 9600},
    {0000016, 19200}, {0000017, 38400}, {0010001, 57600}, {0010002, 115200},
    {0010003, 230400}, {0010004, 460800}, {0010005, 500000}, {0010006, 576000},
    {0010007, 921600}, {0010010, 1000000}, {0010011, 1152000}, {0010012, 1500000},
    {0010013, 2000000}, {0010014, 2500000}, {0010015, 3000000}, {0010016, 3500000},
    {0010017, 4000000},
};
#define N_SPEEDS (sizeof speeds / sizeof speeds[0])

__attribute__((constructor)) static void forget_preload(void) { unsetenv("LD_PRELOAD"); }

static long raw_ioctl(int fd, unsigned long req, void *arg) {
    return syscall(SYS_ioctl, fd, req, arg);
}

int ioctl(int fd, unsigned long req, ...) {
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);

    if (req == K_TCGETS2) {
        struct k_termios t;
        struct k_termios2 *t2 = arg;
        long r = raw_ioctl(fd, K_TCGETS, &t);
        if (r < 0) return (int)r;
        memcpy(t2, &t, sizeof t);
        unsigned int code = t.c_cflag & K_CBAUD, speed = 0;
        for (size_t i = 0; i < N_SPEEDS; i++)
            if (speeds[i].code == code) speed = speeds[i].speed;
        t2->c_ispeed = t2->c_ospeed = speed;
        return 0;
    }
    if (req == K_TCSETS2 || req == K_TCSETSW2 || req == K_TCSETSF2) {
        const struct k_termios2 *t2 = arg;
        struct k_termios t;
        memcpy(&t, t2, sizeof t);
        if ((t.c_cflag & K_CBAUD) == K_BOTHER) {
            unsigned int code = ~0U;
            for (size_t i = 0; i < N_SPEEDS; i++)
                if (speeds[i].speed == t2->c_ospeed) code = speeds[i].code;
            if (code == ~0U) {
                errno = EINVAL;
                return -1;
            }
            t.c_cflag = (t.c_cflag & ~K_CBAUD) | code;
        }
        t.c_cflag &= ~K_CIBAUD; /* input speed = output speed */
        unsigned long classic =
            req == K_TCSETS2 ? K_TCSETS : req == K_TCSETSW2 ? K_TCSETSW : K_TCSETSF;
        return (int)raw_ioctl(fd, classic, &t);
    }
    return (int)raw_ioctl(fd, req, arg);
}

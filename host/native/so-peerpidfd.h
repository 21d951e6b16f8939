// SO_PEERPIDFD (Linux 6.5) where the C library's headers predate it. Its number is not the same
// on every architecture: include/uapi/asm-generic/socket.h has 77 (x86, arm, arm64, riscv,
// powerpc, s390, loongarch take their SO_ numbers from it; alpha and mips have their own
// asm/socket.h, with 77 too), arch/parisc/include/uapi/asm/socket.h 0x404B,
// arch/sparc/include/uapi/asm/socket.h 0x0056. Elsewhere it is left undefined rather than
// guessed: a wrong number would ask the kernel for another option. tap-fd.c then answers
// ENOPROTOOPT, as a kernel before 6.5 does. No includes, so that the choice can be checked for
// any architecture by preprocessing alone (test/host/vmm/tap-fd.test.ts).
#ifndef SPECTRUM_SO_PEERPIDFD_H
#define SPECTRUM_SO_PEERPIDFD_H

#ifndef SO_PEERPIDFD
#if defined(__hppa__)
#define SO_PEERPIDFD 0x404B
#elif defined(__sparc__)
#define SO_PEERPIDFD 0x0056
#elif defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__arm__) || defined(__riscv) || \
    defined(__powerpc__) || defined(__s390__) || defined(__loongarch__) || defined(__alpha__) || defined(__mips__)
#define SO_PEERPIDFD 77
#endif
#endif

#endif

// pidfd_open, which glibc before 2.36 does not wrap and Swift cannot call through the
// variadic syscall(2).
#include <errno.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/// A file descriptor that refers to process `pid` for as long as it is open, whatever pid
/// the kernel hands out later; it polls readable once the process has exited. -1 with
/// errno set where the kernel cannot (before Linux 5.3: ENOSYS).
static inline int baton_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

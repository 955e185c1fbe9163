/* fault.c - see fault.h. */
#include "fault.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static const char *fault_prog = "reap";
static struct sigaction fault_old[3];   /* SIGBUS, SIGSEGV, SIGABRT before install */
static const int fault_sigs[3] = {SIGBUS, SIGSEGV, SIGABRT};
static __thread const char *fault_ctx;
static __thread int fault_depth;

void reap_fault_enter(const char *ctx)
{
    if (fault_depth++ == 0)
        fault_ctx = ctx;
}

void reap_fault_leave(void)
{
    if (fault_depth > 0 && --fault_depth == 0)
        fault_ctx = NULL;
}

static void put(const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    const char *ctx = fault_ctx;
    if (ctx) {
        put(fault_prog);
        put(": fatal: ");
        put(sig == SIGBUS ? "bad memory access (SIGBUS)"
            : sig == SIGSEGV ? "invalid memory access (SIGSEGV)"
                             : "aborted (SIGABRT)");
        put(" while ");
        put(ctx);
        put("\n");
        _exit(REAP_FAULT_EXIT);
    }
    /* Not ours: what was there before (the default action, or a sanitizer's handler).
     * A fault raised by the kernel (si_code > 0) happens again when the handler returns,
     * now under the old action; a signal sent by a process is raised again. */
    for (int i = 0; i < 3; i++)
        if (fault_sigs[i] == sig)
            sigaction(sig, &fault_old[i], NULL);
    if (si && si->si_code > 0 && sig != SIGABRT)
        return;
    raise(sig);
}

void reap_fault_handlers_install(const char *prog)
{
    struct sigaction sa;
    if (prog)
        fault_prog = prog;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    for (int i = 0; i < 3; i++)
        sigaction(fault_sigs[i], &sa, &fault_old[i]);
}

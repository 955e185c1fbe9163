/* test_fault.c - common/fault.h in child processes: a fault inside an entered region
 * ends the process with REAP_FAULT_EXIT and the context on stderr (also when regions
 * nest and an inner one has been left); outside any region, and after the outermost
 * leave, the signal keeps its old action (the child dies of it).
 *
 * Usage: test_fault (no arguments needed).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "test_util.h"

/* Run `body` in a child with stderr on a pipe; *status and the child's stderr back. */
static void in_child(void (*body)(void), int *status, char *err, size_t cap)
{
    int fd[2];
    CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], STDERR_FILENO);
        reap_fault_handlers_install("test_fault");
        body();
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd[0], err + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    err[n] = '\0';
    close(fd[0]);
    CHECK(waitpid(pid, status, 0) == pid);
}

static void fault_inside(void)
{
    reap_fault_enter("reading the test mapping");
    raise(SIGBUS);
}

static void fault_nested(void)
{
    reap_fault_enter("the outer region");
    reap_fault_enter("the inner region");
    reap_fault_leave();
    raise(SIGSEGV);
}

static void fault_after_leave(void)
{
    reap_fault_enter("a region");
    reap_fault_leave();
    raise(SIGABRT);
}

static void fault_outside(void)
{
    raise(SIGABRT);
}

int main(void)
{
    int st;
    char err[1024];

    in_child(fault_inside, &st, err, sizeof err);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == REAP_FAULT_EXIT);
    CHECK_MSG(strstr(err, "test_fault: fatal: bad memory access (SIGBUS) while reading the "
                          "test mapping") != NULL, "stderr: %s", err);

    in_child(fault_nested, &st, err, sizeof err);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == REAP_FAULT_EXIT);
    CHECK_MSG(strstr(err, "(SIGSEGV) while the outer region") != NULL, "stderr: %s", err);

    in_child(fault_after_leave, &st, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    CHECK_MSG(strstr(err, "fatal") == NULL, "stderr: %s", err);

    in_child(fault_outside, &st, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    TEST_MAIN_END();
}

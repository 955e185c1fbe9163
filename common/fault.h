/* fault.h - a clear last word instead of a bare "Bus error" when a memory fault hits
 * while a thread works inside a memory-mapped file that may be damaged (the score
 * store's data.mdb: LMDB reads its B-tree straight from the map and keeps no page
 * checksums, so a damaged page can send a read outside the file).
 *
 * An executable calls reap_fault_handlers_install once at start. Code about to touch
 * such a mapping brackets the work with reap_fault_enter(ctx) / reap_fault_leave(); the
 * brackets nest per thread (the outermost context is reported). When SIGBUS, SIGSEGV or
 * SIGABRT (LMDB's own assertions abort) arrives on a thread inside a bracket, the
 * handler writes "<prog>: fatal: <signal> while <ctx>" to stderr and exits with status
 * REAP_FAULT_EXIT (74, "I/O error" in sysexits terms), so scripts see a failure with a
 * reason, not a signal death. Outside any bracket the action installed before (the
 * default, or a sanitizer's handler) takes the signal: a crash of the program's own
 * making stays a crash, with its core dump or report.
 *
 * Thread rules: the context is thread-local; install once, from the main thread, before
 * other threads start. `ctx` must stay valid until the matching leave. The handler only
 * uses async-signal-safe calls (write, _exit, sigaction, raise).
 * Tests: tests/store_cli.sh damages every page of a store and requires an exit status of
 * the program's own (never a signal death); test_fault checks both paths.
 */
#ifndef REAP_FAULT_H
#define REAP_FAULT_H

#define REAP_FAULT_EXIT 74

/* Install the handlers; `prog` (kept, not copied) starts the message. */
void reap_fault_handlers_install(const char *prog);

/* Enter / leave a region where a fault means damaged data described by `ctx`. */
void reap_fault_enter(const char *ctx);
void reap_fault_leave(void);

#endif

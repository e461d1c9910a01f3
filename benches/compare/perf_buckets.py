#!/usr/bin/env python3
"""Summarises `perf script` output (cpu-clock samples with DWARF call chains) of one proxy's
processes into where its CPU goes. Used by `benches/compare/run.sh profile`.

    perf script -i perf.data | python3 benches/compare/perf_buckets.py [requests] [cpu_seconds]

Prints:
  1. self time by component: each sample goes to one bucket. Kernel samples are filed under the
     system call they happened in (named by the libc wrapper that made it: __GI___writev,
     __libc_recv, epoll_wait, ...); user samples under the innermost frame whose function (not
     its generic arguments) belongs to a known component;
  2. inclusive time of stages and libraries: a sample counts for every marker found in its stack,
     so rows overlap;
  3. the heaviest leaf functions;
  4. user-space time by owner: each user-space sample goes to the innermost frame that is not
     std/core/alloc, bytes, http, the allocator or libc, so allocations, copies and map look-ups
     are charged to the function that asked for them.
With the request count and the CPU seconds of the recording, shares become µs per request
(share x CPU seconds / requests).

Names are matched on a frame's function path: its leading `<` is dropped and it is cut at the
first `<`, space or `(`, so `poll<tokio::time::timeout::Timeout<..>>` is `poll`, and
`<hyper::proto::h1::role::Server as ..>::parse` is `hyper::proto::h1::role::Server`.
"""

import re
import sys
from collections import Counter

KERNEL = "[kernel.kallsyms]"

# Self time: the innermost frame whose path matches decides (first pattern that matches).
USER_COMPONENTS = [
    ("access log: tracing-subscriber JSON formatting and writing", r"^(tracing_subscriber|tracing_core|tracing|tracing_serde)::|^etelecom_gateway::access_log::AccessLog"),
    ("serde_json", r"^serde_json::"),
    ("gateway metrics (prometheus-client label maps, histograms)", r"^etelecom_gateway::metrics|^prometheus_client::"),
    ("gateway rate limiter (governor, quanta clock)", r"^etelecom_gateway::ratelimit|^governor::|^quanta::"),
    ("gateway cache (moka)", r"^etelecom_gateway::cache|^moka::"),
    ("gateway header hygiene (headers.rs)", r"^etelecom_gateway::headers"),
    ("gateway other (route, tenants, body, ids, proxy, upstream.rs)", r"^etelecom_gateway::"),
    ("httparse", r"^httparse::"),
    ("hyper h1 server role: parse request, encode response", r"^hyper::proto::h1::role::Server"),
    ("hyper h1 client role: encode request, parse response", r"^hyper::proto::h1::role::Client"),
    ("hyper_util legacy client: pool checkout, connection reuse", r"^hyper_util::client::legacy"),
    ("hyper client dispatch channel (request/response hand-off between tasks)", r"^hyper::client::dispatch|^want::|^tokio::sync::(mpsc|oneshot)"),
    ("hyper other (h1 dispatcher, io buffers, body)", r"^hyper::|^hyper_util::"),
    ("http crate (HeaderMap, Uri, Request/Response)", r"^http::"),
    ("tokio timers (timeout, sleep, timer wheel)", r"^tokio::runtime::time::(wheel|entry|source|handle|<impl)|^tokio::time::|^hyper_util::rt::tokio::Tokio(Sleep|Timer)"),
    ("tokio IO driver (readiness, mio)", r"^tokio::runtime::io::|^mio::"),
    ("tokio scheduler, task harness, wakers", r"^tokio::"),
    ("bytes", r"^bytes::"),
    ("hashing (SipHash)", r"^core::hash::sip"),
    ("std / core / alloc", r"^(std|core|alloc)::"),
]
USER_COMPONENTS = [(n, re.compile(p)) for n, p in USER_COMPONENTS]

MALLOC = re.compile(
    r"^(malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|"
    r"unlink_chunk.*|__GI___libc_malloc|__GI___libc_free|__GI___libc_realloc|__libc_malloc|"
    r"__libc_free|__libc_realloc|tcache_get|tcache_put|sysmalloc|__rust_alloc|__rust_dealloc|"
    r"__rust_realloc|__rdl_alloc|__rdl_dealloc|__rdl_realloc)$"
)
MEMFN = re.compile(r"^__(memmove|memcpy|memset|memcmp|memchr|strlen|bcmp)")

# Inclusive markers: (label, regex on a frame's path, regex on the whole name or None).
INCLUSIVE = [
    ("gateway code, any etelecom_gateway function and what it calls synchronously (not the hyper connection tasks)", r"^etelecom_gateway::(proxy|upstream|headers|metrics|ratelimit|cache|access_log|route|tenants|body|catalogue|redact)", None),
    ("  Gateway::forward (rate limit, upstream call, feedback)", r"^etelecom_gateway::proxy::Gateway::forward", None),
    ("  Upstream::send (build the upstream request, hand it to the client, read the answer)", r"^etelecom_gateway::upstream::Upstream::send", None),
    ("  header hygiene (headers.rs)", r"^etelecom_gateway::headers", None),
    ("  metrics", r"^etelecom_gateway::metrics|^prometheus_client::", None),
    ("  rate limiter", r"^etelecom_gateway::ratelimit|^governor::", None),
    ("  cache", r"^etelecom_gateway::cache|^moka::", None),
    ("  access log (AccessLog::emit, tracing)", r"^etelecom_gateway::access_log::AccessLog|^tracing_subscriber::|^tracing_core::", None),
    ("  request id", r"^etelecom_gateway::access_log::RequestIds", None),
    ("  route + catalogue + tenants + body check", r"^etelecom_gateway::(route|catalogue|tenants|body)::", None),
    ("hyper h1 server connection (caller side): read, parse, dispatch, encode, write", None, r"^(\S+<)?hyper::proto::h1::dispatch::Server<|dispatch::Server<"),
    ("hyper h1 client connection task (upstream side): a separate task per upstream connection", None, r"^\w+<hyper::proto::h1::dispatch::Client<|^<hyper::client::conn::http1::upgrades::UpgradeableConnection"),
    ("hyper_util client: send_request, pool checkout", r"^hyper_util::client::legacy::(client::Client|pool)", None),
    ("hyper client dispatch channel", r"^hyper::client::dispatch|^want::|^tokio::sync::(mpsc|oneshot)", None),
    ("tokio timers (timeout/sleep registration, wheel)", r"^tokio::runtime::time::(wheel|entry|source|handle|<impl)|^tokio::time::sleep|^tokio::time::timeout::timeout$|^hyper_util::rt::tokio::Tokio(Sleep|Timer)", None),
    ("tokio worker park (epoll_wait, events, fired timers)", r"^tokio::runtime::scheduler::multi_thread::worker::Context::park", None),
    ("tokio task wake-ups (wake, schedule)", r"^tokio::runtime::(task::waker|scheduler::multi_thread::worker::.*schedule|task::raw::schedule)|^tokio::runtime::io::scheduled_io::ScheduledIo::wake", None),
    ("syscall writev/write/sendto (includes delivering the data to the peer socket on loopback)", r"^(__GI___writev|__writev|writev|__GI___libc_write|__libc_write|write|__libc_sendto|sendto|__libc_sendmsg|sendmsg|__GI___sendmsg)$", None),
    ("syscall recv/read", r"^(__libc_recv|__GI___recv|recv|__libc_recvfrom|recvfrom|__GI___libc_read|__libc_read|read|__libc_readv|readv|__libc_recvmsg|recvmsg)$", None),
    ("syscall epoll_wait", r"^(epoll_wait|epoll_pwait|__GI_epoll_pwait|__epoll_wait)$", None),
    ("syscall epoll_ctl", r"^(epoll_ctl|__GI_epoll_ctl)$", None),
    ("syscall open/fstat/pread/close (NGINX cache file)", r"^(__libc_open64|__GI___open64_nocancel|open64|__open64|openat64|__GI___libc_open|__libc_pread|__libc_pread64|pread64|__GI___pread64|__fstat64|fstat64|__GI___fstat64|__fstatat64|__close|__GI___close|close|__libc_close)$", None),
    ("kernel softirq: loopback receive processing (TCP rx of the peer, run in this process)", r"^(handle_softirqs|net_rx_action|do_softirq.*|__do_softirq)$", None),
    ("kernel wake-ups of other tasks (try_to_wake_up)", r"^try_to_wake_up$", None),
    ("glibc malloc/free (all callers)", MALLOC.pattern, None),
]
INCLUSIVE = [
    (n, re.compile(p) if p else None, re.compile(w) if w else None) for n, p, w in INCLUSIVE
]


def lead(sym):
    """The function path of a frame name, without generic arguments."""
    s = sym[1:] if sym.startswith("<") else sym
    m = re.match(r"[^<\s(]*", s)
    return m.group(0) if m else s


def parse(stream):
    """Yields (comm, frames), frames innermost first as (name, dso)."""
    comm, frames = None, []
    frame_re = re.compile(r"^\s+[0-9a-f]+\s+(.*)\s+\((\S*?)\)\s*$")
    for line in stream:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if not line[0].isspace():
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
            continue
        m = frame_re.match(line)
        if m:
            name = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1).strip())
            frames.append((name, m.group(2)))
    if comm is not None:
        yield comm, frames


def syscall_of(frames):
    """The libc wrapper (first user frame) of a kernel sample, or None outside a syscall."""
    in_syscall = False
    for name, dso in frames:
        if dso == KERNEL:
            if name.startswith(("do_syscall_64", "entry_SYSCALL")):
                in_syscall = True
            continue
        return lead(name) if in_syscall else None
    return None


def self_component(frames):
    if not frames:
        return "unknown (no frames)"
    name, dso = frames[0]
    if dso == KERNEL:
        sc = syscall_of(frames)
        return f"kernel: in {sc}()" if sc else "kernel: outside a system call (interrupts)"
    if "vdso" in dso:
        return "vdso clock_gettime (Instant::now, timers)"
    if MALLOC.match(lead(name)):
        return "glibc malloc/free"
    if MEMFN.match(name):
        return "libc memcpy/memmove/memset"
    for n, _ in frames:
        path = lead(n)
        for comp, rx in USER_COMPONENTS:
            if rx.search(path):
                return comp
    if "libc" in dso:
        return "libc other"
    if "nginx" in dso:
        return "nginx: " + lead(name)
    return "other (" + lead(name)[:60] + ")"


OWNER_SKIP = re.compile(r"^(std|core|alloc|bytes|http|__rustc|__rdl|hashbrown|smallvec)::|^[^:]*$")


def owner(frames):
    for name, dso in frames:
        if dso == KERNEL:
            continue
        path = lead(name).lstrip("&")
        if not OWNER_SKIP.search(path):
            return re.sub(r"::\{\{closure\}\}.*$", "", path)
    return "(std/libc only)"


def main():
    requests = float(sys.argv[1]) if len(sys.argv) > 1 else 0
    cpu = float(sys.argv[2]) if len(sys.argv) > 2 else 0
    per_req = cpu / requests * 1e6 if requests and cpu else 0
    selfc, incl, leaves, threads, owners = Counter(), Counter(), Counter(), Counter(), Counter()
    total = 0
    for comm, frames in parse(sys.stdin):
        total += 1
        threads[comm] += 1
        selfc[self_component(frames)] += 1
        if frames:
            leaves[f"{frames[0][0][:110]} [{frames[0][1].rsplit('/', 1)[-1]}]"] += 1
        if frames and frames[0][1] != KERNEL:
            owners[owner(frames)] += 1
        paths = [lead(n) for n, _ in frames]
        names = [n for n, _ in frames]
        for label, prx, wrx in INCLUSIVE:
            if (prx and any(prx.search(p) for p in paths)) or (wrx and any(wrx.search(n) for n in names)):
                incl[label] += 1
    if not total:
        print("no samples")
        return

    def row(share, what):
        if per_req:
            return f"| {100 * share:5.1f}% | {share * per_req:6.2f} | {what} |"
        return f"| {100 * share:5.1f}% | {what} |"

    head = "| share | µs/request | {} |" if per_req else "| share | {} |"
    rule = "| ---: | ---: | --- |" if per_req else "| ---: | --- |"
    print(f"{total} samples" + (f"; {per_req:.2f} µs of CPU per request in all" if per_req else ""))
    print("\nSamples by thread\n\n| share | thread |\n| ---: | --- |")
    for name, n in threads.most_common():
        print(f"| {100 * n / total:5.1f}% | {name} |")
    print("\n1. Self time by component\n")
    print(head.format("component"))
    print(rule)
    for name, n in selfc.most_common():
        print(row(n / total, name))
    print("\n2. Inclusive time (a sample counts for every marker in its stack; rows overlap)\n")
    print(head.format("stage / library"))
    print(rule)
    for label, _, _ in INCLUSIVE:
        print(row(incl[label] / total, label))
    print("\n3. Heaviest leaf functions\n")
    print(head.format("function [object]"))
    print(rule)
    for name, n in leaves.most_common(30):
        print(row(n / total, name.replace("|", "\\|")))
    user = sum(owners.values())
    print(f"\n4. User-space time by owner ({100 * user / total:.1f}% of samples are in user space)\n")
    print(head.format("owner (innermost frame outside std/core/alloc, bytes, http, allocator, libc)"))
    print(rule)
    for name, n in owners.most_common(40):
        print(row(n / total, name.replace("|", "\\|")))


if __name__ == "__main__":
    main()

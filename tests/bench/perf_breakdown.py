#!/usr/bin/env python3
"""Where a backend's CPU goes per transaction, from `perf script` output.

usage: perf_breakdown.py PERF_SCRIPT_TXT US_PER_TX

Samples are grouped by what they were doing: inside the extension (by the
PostgreSQL function the extension called, or the extension's own code),
in the outer statement's executor (FunctionScan set-up, tuplestore), in the
protocol (socket reads/writes), at commit, and so on. Shares are scaled by
US_PER_TX (the measured server CPU per transaction) into microseconds.
DWARF unwinding stops at the extension's Rust frames, so a sample taken
inside the extension is recognised by the first frame in apollo_jobs.so.
"""
import collections
import re
import sys

FRAME = re.compile(r'^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$')


def samples(path):
    for block in open(path, errors='replace').read().split('\n\n'):
        lines = [l for l in block.split('\n') if l.strip()]
        if not lines or 'cpu-clock' not in lines[0]:
            continue
        frames = []
        for line in lines[1:]:
            m = FRAME.match(line)
            if m:
                frames.append((re.sub(r'\+0x[0-9a-f]+$', '', m.group(2)), m.group(3)))
        if frames:
            yield frames


def category(frames):
    syms = [f[0] for f in frames]
    ext = [i for i, f in enumerate(frames) if 'apollo_jobs.so' in f[1]]
    if ext:
        i = ext[0]
        if i == 0:
            return 'extension: own code (pgrx glue, FFI guards, conversions)'
        return 'extension -> ' + frames[i - 1][0]
    if 'ExecInitFunctionScan' in syms:
        if any(s.startswith('build_function_result_tupdesc') for s in syms):
            return 'outer: ExecInitFunctionScan > build_function_result_tupdesc (RETURNS TABLE)'
        return 'outer: ExecInitFunctionScan (other)'
    if 'ExecMakeTableFunctionResult' in syms:
        return 'outer: ExecMakeTableFunctionResult (tuplestore; for PL/pgSQL: the whole function)'
    if any(s in ('secure_read', 'secure_write', 'pq_getbyte', 'pq_flush') for s in syms) \
            or any('epoll' in s for s in syms):
        return 'protocol: socket read/write, waiting'
    if 'CommitTransactionCommand' in syms:
        return 'transaction commit'
    if 'StartTransactionCommand' in syms:
        return 'transaction start'
    if 'AfterTriggerEndQuery' in syms:
        return 'statement: FK checks (after triggers)'
    if 'PortalStart' in syms:
        return 'statement: executor start (plan node set-up)'
    if 'PortalRun' in syms:
        return 'statement: executor run'
    if 'PostgresMain' in syms:
        j = syms.index('PostgresMain')
        return 'other: ' + (syms[j - 1] if j > 0 else 'PostgresMain')
    return 'stack lost: ' + syms[0]


def main():
    path, us = sys.argv[1], float(sys.argv[2])
    counts = collections.Counter()
    n = 0
    for frames in samples(path):
        counts[category(frames)] += 1
        n += 1
    if not n:
        sys.exit('no samples')
    small = 0
    print('%7s %8s  %s' % ('share', 'us/tx', 'where'))
    for key, c in counts.most_common():
        if c / n < 0.005:
            small += c
            continue
        print('%6.1f%% %8.2f  %s' % (100 * c / n, us * c / n, key))
    print('%6.1f%% %8.2f  (the rest, each under 0.5%%)' % (100 * small / n, us * small / n))
    print('%d samples' % n)


if __name__ == '__main__':
    main()

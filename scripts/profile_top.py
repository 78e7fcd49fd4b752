#!/usr/bin/env python3
"""Top functions by self time in a samply profile, without a browser.

    python3 scripts/profile_top.py samply_reports/1.profile.json [--top 20] [--inlined]

A profile saved by `samply record --save-only` is not symbolicated: its function names are
addresses inside each library ("0x1c0995"). `make perf-cluster` records with
`--unstable-presymbolicate`, which writes the symbols beside it (N.profile.syms.json); this
script names each address from that file, or, when it is missing, with `addr2line` on the
library the profile points to (the binary must not have been rebuilt since).

Self time: the samples whose innermost frame is in the function, over all threads of the
process (samply samples on-CPU threads at --rate Hz, so a sample is about 1 ms of CPU).
By default a function is the symbol the address falls in, the machine-code function with
everything inlined into it. --inlined names the innermost inlined source function and its
line instead (llvm-addr2line -i on the binary), close to what the Firefox Profiler shows
once `samply load` symbolicates. --in ringkv charges each sample to its innermost frame in
our binary: which of our functions the time in libc (and the kernel, under the syscall
wrappers) is spent for. Kernel stacks are not recorded.
"""

import argparse
import bisect
import collections
import gzip
import json
import os
import re
import shutil
import subprocess
import sys


def load_json(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


class SidecarSymbols:
    """The N.profile.syms.json sidecar: per library, symbol start, size and name."""

    def __init__(self, path):
        data = load_json(path)
        strings = data["string_table"]
        self.libs = {}
        for lib in data["data"]:
            table = sorted(
                (s["rva"], s.get("size") or 0, strings[s["symbol"]]) for s in lib["symbol_table"]
            )
            known = {rva: strings[lib["symbol_table"][i]["symbol"]] for rva, i in lib["known_addresses"]}
            self.libs[lib["code_id"].lower()] = (table, [t[0] for t in table], known)
            self.libs.setdefault(lib["debug_name"], self.libs[lib["code_id"].lower()])

    def name(self, lib, address):
        entry = self.libs.get((lib.get("codeId") or "").lower()) or self.libs.get(lib["debugName"])
        if entry is None:
            return None
        table, starts, known = entry
        if address in known:
            return known[address]
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0:
            start, size, name = table[i]
            if size == 0 or address < start + size:
                return name
        return None


ADDRESS_LINE = re.compile(r"^0x[0-9a-fA-F]+$")


def addr2line(path, addresses, inlined):
    """{address: (function, file:line or None)} for addresses relative to the ELF file `path`.

    Plain: GNU addr2line's name for the symbol the address is in. Inlined: the innermost
    inlined function and its source line; llvm-addr2line when installed, since GNU
    addr2line names inlined Rust code after the outer function."""
    addresses = sorted(addresses)
    if not addresses or not os.path.isfile(path):
        return {}
    tool = "addr2line"
    if inlined and shutil.which("llvm-addr2line"):
        tool = "llvm-addr2line"
    args = [tool, "-a", "-f", "-C", "-e", path] + (["-i"] if inlined else [])
    out = subprocess.run(
        args, input="\n".join(hex(a) for a in addresses), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Each address is echoed ("0x..."), then function and file:line pairs, innermost first.
    names = {}
    i = 0
    while i < len(out):
        if ADDRESS_LINE.match(out[i]) and i + 2 < len(out) + 1:
            address, function = int(out[i], 16), out[i + 1] if i + 1 < len(out) else "??"
            location = out[i + 2] if i + 2 < len(out) else "??"
            if function != "??":
                where = location.split("/src/", 1)[-1] if "/src/" in location else location
                where = re.sub(r"^index\.crates\.io-[0-9a-f]+/", "", where)
                names[address] = (function, where if inlined else None)
            i += 3
            while i < len(out) and not ADDRESS_LINE.match(out[i]):
                i += 1
        else:
            i += 1
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--syms", help="sidecar symbols (default: the profile's .syms.json)")
    ap.add_argument("--inlined", action="store_true", help="innermost inlined function (addr2line -i)")
    ap.add_argument("--threads", action="store_true", help="also list samples per thread")
    ap.add_argument("--in", dest="in_lib", metavar="LIB",
                    help="charge each sample to its innermost frame in library LIB (e.g. ringkv: "
                         "which of our functions the time in libc and syscalls comes from)")
    ap.add_argument("--callers", metavar="TEXT",
                    help="instead of the table: for the samples whose innermost function's name "
                         "contains TEXT, the commonest chains of the --depth frames above it")
    ap.add_argument("--depth", type=int, default=4, help="frames per chain for --callers (4)")
    opts = ap.parse_args()

    profile = load_json(opts.profile)
    libs = profile["libs"]
    base = opts.profile[: -len(".gz")] if opts.profile.endswith(".gz") else opts.profile
    syms_path = opts.syms or (base[: -len(".json")] + ".syms.json")
    sidecar = SidecarSymbols(syms_path) if os.path.exists(syms_path) and not opts.inlined else None

    def lib_name(t, stack):
        func = t["frameTable"]["func"][t["stackTable"]["frame"][stack]]
        res = t["funcTable"]["resource"][func]
        if res is None or res < 0:
            return None
        return libs[t["resourceTable"]["lib"][res]]["name"]

    if opts.callers:
        callers(profile, sidecar, opts)
        return

    # Self samples per (library index, address) of the innermost frame.
    leaf = collections.Counter()
    per_thread = collections.Counter()
    leaf_threads = collections.defaultdict(collections.Counter)
    total = 0
    for t in profile["threads"]:
        samples, stacks, frames, funcs = t["samples"], t["stackTable"], t["frameTable"], t["funcTable"]
        resources, strings = t["resourceTable"], t["stringArray"]
        weights = samples.get("weight") or [1] * samples["length"]
        for stack, w in zip(samples["stack"], weights):
            if stack is None:
                continue
            if opts.in_lib:
                s = stack
                while s is not None and lib_name(t, s) != opts.in_lib:
                    s = stacks["prefix"][s]
                stack = stack if s is None else s
            frame = stacks["frame"][stack]
            func = frames["func"][frame]
            res = funcs["resource"][func]
            lib = resources["lib"][res] if res is not None and res >= 0 else None
            if lib is None:  # a frame without a library: keep its own name
                key = (None, strings[funcs["name"][func]])
            else:
                key = (lib, frames["address"][frame])
            leaf[key] += w
            leaf_threads[key][t["name"]] += w
            per_thread[f'{t["name"]} (tid {t["tid"]})'] += w
            total += w
    if total == 0:
        sys.exit(f"{opts.profile}: no samples")

    # Name every address: sidecar first, then addr2line on the library file.
    names = {}
    unresolved = collections.defaultdict(set)
    for lib, addr in leaf:
        if lib is None:
            names[(lib, addr)] = (addr, None)
            continue
        name = sidecar.name(libs[lib], addr) if sidecar else None
        if name is None:
            unresolved[lib].add(addr)
        else:
            names[(lib, addr)] = (name, None)
    how = "sidecar " + os.path.basename(syms_path) if sidecar else "addr2line"
    for lib, addrs in unresolved.items():
        found = addr2line(libs[lib]["path"], addrs, opts.inlined)
        for a in addrs:
            if a in found:
                names[(lib, a)] = found[a]
    missing = sum(leaf[k] for k in leaf if k not in names)

    by_func = collections.Counter()
    func_lib = {}
    func_threads = collections.defaultdict(collections.Counter)
    func_lines = collections.defaultdict(collections.Counter)
    for key, n in leaf.items():
        lib = key[0]
        name, line = names.get(key) or (f"{hex(key[1])} (unsymbolicated)", None)
        libname = libs[lib]["name"] if lib is not None else "?"
        by_func[(name, libname)] += n
        func_threads[(name, libname)].update(leaf_threads[key])
        if line:
            func_lines[(name, libname)][line] += n

    print(f"{opts.profile}: {total} samples over {len(per_thread)} threads; symbols from {how}"
          + (f"; each sample charged to its innermost {opts.in_lib} frame" if opts.in_lib else "")
          + (f"; {missing} samples ({100 * missing / total:.1f}%) unsymbolicated" if missing else ""))
    if opts.threads:
        for name, n in per_thread.most_common():
            print(f"  {n:7d} {100 * n / total:5.1f}%  {name}")
    print(f"{'self':>7} {'%':>6}  function [library] (main thread)"
          + ("; hottest line" if opts.inlined else ""))
    for (name, libname), n in by_func.most_common(opts.top):
        thread = func_threads[(name, libname)].most_common(1)[0][0]
        lines = func_lines.get((name, libname))
        line = f"; {lines.most_common(1)[0][0]}" if lines else ""
        print(f"{n:7d} {100 * n / total:5.1f}%  {name} [{libname}] ({thread}{line})")


def callers(profile, sidecar, opts):
    """Prints the commonest caller chains of the samples whose leaf matches opts.callers."""
    libs = profile["libs"]
    cache = {}

    def frame_name(t, frame):
        func = t["frameTable"]["func"][frame]
        res = t["funcTable"]["resource"][func]
        lib = t["resourceTable"]["lib"][res] if res is not None and res >= 0 else None
        if lib is None or sidecar is None:
            return t["stringArray"][t["funcTable"]["name"][func]]
        key = (lib, t["frameTable"]["address"][frame])
        if key not in cache:
            cache[key] = sidecar.name(libs[lib], key[1]) or hex(key[1])
        return cache[key]

    chains = collections.Counter()
    matched = total = 0
    for t in profile["threads"]:
        stacks = t["stackTable"]
        weights = t["samples"].get("weight") or [1] * t["samples"]["length"]
        for stack, w in zip(t["samples"]["stack"], weights):
            if stack is None:
                continue
            total += w
            if opts.callers not in frame_name(t, stacks["frame"][stack]):
                continue
            matched += w
            chain, s = [], stacks["prefix"][stack]
            while s is not None and len(chain) < opts.depth:
                chain.append(re.sub(r"::\{\{closure\}\}", "{c}", frame_name(t, stacks["frame"][s])))
                s = stacks["prefix"][s]
            chains[" <- ".join(chain)] += w
    print(f"{opts.profile}: {matched} of {total} samples end in a function named *{opts.callers}*; "
          f"their callers, innermost first:")
    for chain, n in chains.most_common(opts.top):
        print(f"{n:7d} {100 * n / max(matched, 1):5.1f}%  {chain}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a large WASI command module (WAT) for the cold/warm start benchmark.

`gen-large-module.py N OUT.wat` emits N functions of straight-line integer
arithmetic, a table that references all of them (so none is dead code), and a
`_start` that calls a few and prints a line. wat2wasm turns it into a binary of
roughly N * 330 bytes.
"""
import sys

n = int(sys.argv[1])
out = open(sys.argv[2], "w")
out.write('(module\n')
out.write('  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))\n')
out.write('  (memory (export "memory") 1)\n')
out.write('  (data (i32.const 64) "large module ran\\n")\n')
out.write('  (type $t (func (param i32 i32) (result i32)))\n')
for i in range(n):
    body = []
    for j in range(24):
        body.append(f"local.get 0 i32.const {i * 31 + j} i32.mul local.get 1 i32.xor local.set 1")
    out.write(f"  (func $f{i} (type $t) {' '.join(body)} local.get 1)\n")
out.write(f"  (table {n} funcref)\n")
out.write("  (elem (i32.const 0) " + " ".join(f"$f{i}" for i in range(n)) + ")\n")
out.write("""  (func (export "_start")
    (drop (call_indirect (type $t) (i32.const 7) (i32.const 3) (i32.const 0)))
    (drop (call_indirect (type $t) (i32.const 7) (i32.const 3) (i32.const %d)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
""" % (n - 1))

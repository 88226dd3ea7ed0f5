#!/usr/bin/env python3
"""Appends a custom section to a wasm module or component, which still runs.

    custom-section.py SRC DST NAME --payload TEXT    # distinct copies of one app
    custom-section.py SRC DST NAME --total-mib N     # DST of exactly N MiB

A custom section may end any wasm binary: id 0, the LEB128 size of its
contents, then the contents (the LEB128 length of the name, the name, the
payload). With --total-mib the payload is seeded pseudo-random bytes, so DST's
digest is the same on every run.
"""
import argparse
import random


def leb128(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("name")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--payload")
    group.add_argument("--total-mib", type=int)
    args = parser.parse_args()
    wasm = open(args.src, "rb").read()
    head = leb128(len(args.name)) + args.name.encode()
    with open(args.dst, "wb") as out:
        if args.payload is not None:
            contents = head + args.payload.encode()
            out.write(wasm + b"\x00" + leb128(len(contents)) + contents)
            return
        total = args.total_mib * 2**20
        # The section's size field is part of the total, and its width
        # depends on the size it encodes.
        for width in range(1, 6):
            size = total - len(wasm) - 1 - width
            if len(leb128(size)) == width:
                break
        payload = size - len(head)
        assert payload >= 0, "--total-mib is smaller than the app"
        chunk = random.Random(0).randbytes(2**20)
        out.write(wasm + b"\x00" + leb128(size) + head)
        while payload:
            n = min(payload, len(chunk))
            out.write(chunk[:n])
            payload -= n


if __name__ == "__main__":
    main()

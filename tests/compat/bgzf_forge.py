"""A BGZF FASTA file that hides a record where only a misread split would find it.

One real block R (a dynamic-Huffman deflate stream whose code turns every byte into a letter)
carries two fake BGZF blocks among its compressed bytes: F0 decodes to a newline and F1 to a
record ``INJECTED_RECORD`` that is not in the file; F1's size field ends exactly at the next
real block, and R's text is forged (16 letters) so that R and F1 share their CRC and length.
gzip, htslib and a one-partition scan read the file's records; a scan split in two whose
second range resynchronises on F0/F1 by looking for block headers would return the injected
record. Written by a hostile review of flightbear (2026-12-07).
"""

from __future__ import annotations

import random
import struct
import zlib


def raw_deflate(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def block_from_cdata(cdata, data, xlen_extra=b"", crc=None, isize=None, bsize=None):
    xfield = b"BC" + struct.pack("<H", 2) + b"\0\0" + xlen_extra
    total = 12 + len(xfield) + len(cdata) + 8
    bs = (total - 1) if bsize is None else bsize
    xfield = b"BC" + struct.pack("<HH", 2, bs) + xlen_extra
    hdr = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\0\xff" + struct.pack("<H", len(xfield)) + xfield
    c = zlib.crc32(data) if crc is None else crc
    n = len(data) if isize is None else isize
    return hdr + cdata + struct.pack("<II", c & 0xFFFFFFFF, n & 0xFFFFFFFF)


def block(data, level=6, **kw):
    return block_from_cdata(raw_deflate(data, level), data, **kw)


EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def bgzf(data, chunk=65280, level=6):
    out = []
    for i in range(0, len(data), chunk):
        out.append(block(data[i : i + chunk], level))
    return out


_T = bytes.maketrans(bytes(range(256)), (b"ACGT" * 64))


def fasta_fast(nrec, seqlen, width=60, seed=1, prefix="r"):
    rnd = random.Random(seed)
    parts = []
    for i in range(nrec):
        s = rnd.randbytes(seqlen).translate(_T)
        parts.append(b">%s%d desc %d\n" % (prefix.encode(), i, i))
        parts.append(b"\n".join(s[j : j + width] for j in range(0, len(s), width)) + b"\n")
    return b"".join(parts)


class BW:
    def __init__(s):
        s.bits = []

    def put(s, v, n):  # LSB-first value
        for i in range(n):
            s.bits.append((v >> i) & 1)

    def huff(s, code, n):  # MSB-first code
        for i in range(n - 1, -1, -1):
            s.bits.append((code >> i) & 1)

    def align(s):
        while len(s.bits) % 8:
            s.bits.append(0)

    def bytes(s):
        assert len(s.bits) % 8 == 0
        return bytes(sum(s.bits[i + j] << j for j in range(8)) for i in range(0, len(s.bits), 8))


def canonical(lengths):  # {sym: len} -> {sym: code}
    bl = {}
    for length in lengths.values():
        bl[length] = bl.get(length, 0) + 1
    code = 0
    nxt = {}
    for b in range(1, 16):
        code = (code + bl.get(b - 1, 0)) << 1
        nxt[b] = code
    out = {}
    for sym in sorted(lengths):
        length = lengths[sym]
        out[sym] = nxt[length]
        nxt[length] += 1
    return out


FORGE = [0x41 | m for m in range(0, 32, 2)]  # A C E G ... _ : bits 1..4 over 'A'
others = [c for c in range(0x21, 0x7F) if c not in FORGE and c not in (ord(">"), ord(";"))]
six = FORGE + others[: 63 - len(FORGE)]
rest = others[63 - len(FORGE) :]
lengths = {c: 6 for c in six}
for i, length in enumerate(range(7, 15)):
    lengths[rest[i]] = length
lengths[rest[8]] = 15
lengths[256] = 15
assert abs(sum(2.0**-length for length in lengths.values()) - 1) < 1e-12
codes = canonical(lengths)
decode = {(codes[s], lengths[s]): s for s in lengths}


def parse_bits(bits):
    syms = []
    code = 0
    n = 0
    for b in bits:
        code = (code << 1) | b
        n += 1
        if (code, n) in decode:
            s = decode[(code, n)]
            if s == 256:
                raise ValueError("EOB inside embedded bytes")
            syms.append(s)
            code = 0
            n = 0
    return syms, (code, n)


def bits_of(data):
    return [(byte >> i) & 1 for byte in data for i in range(8)]


def dyn_header(w, final):
    w.put(final, 1)
    w.put(2, 2)
    w.put(0, 5)  # HLIT: 257 codes
    w.put(0, 5)  # HDIST: 1 code
    w.put(15, 4)  # HCLEN: 19 codes
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    for sym in order:
        w.put(4 if sym < 16 else 0, 3)
    for sym in range(257):
        w.huff(lengths.get(sym, 0), 4)
    w.huff(1, 4)  # the one distance code, length 1


def fake_block(cdata, crc, isize, total_len=None):
    n = total_len if total_len else 18 + len(cdata) + 8
    return (
        b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0"
        + struct.pack("<H", n - 1)
        + cdata
        + struct.pack("<II", crc, isize)
    )


def forged_bgzf() -> tuple[bytes, int]:
    """The file's bytes and its size; a 2-partition split falls between F0 and F1."""
    T = 40000
    F1data = b">INJECTED_RECORD this record is not in the file\n" + (b"ACGT" * T)[: T - 50] + b"\n"
    F1data = F1data[: T - 1] + b"\n"
    assert len(F1data) == T
    F1cdata = raw_deflate(F1data, 9)
    junk = b"\x55" * 8000
    F0 = fake_block(raw_deflate(b"\n", 9) + junk, zlib.crc32(b"\n"), 1)
    HEADER = b">Rrec real record holding the fake blocks\n"

    def build_R(bsize_guess):
        F1head = b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0" + struct.pack("<H", bsize_guess)
        E = F0 + F1head + F1cdata
        syms, (rc, rn) = parse_bits(bits_of(E))
        completion = None
        if rn:
            for s in lengths:
                if s != 256 and lengths[s] >= rn and (codes[s] >> (lengths[s] - rn)) == rc:
                    completion = s
                    break
            assert completion is not None
        nletters = T - len(HEADER) - 1
        fixed = len(syms) + (1 if completion is not None else 0) + 16
        P = nletters - fixed
        # first deflate block: stored, holding the header line
        w = BW()
        w.put(0, 1)
        w.put(0, 2)
        w.align()
        w.put(len(HEADER), 16)
        w.put(len(HEADER) ^ 0xFFFF, 16)
        for b in HEADER:
            w.put(b, 8)
        dyn_header(w, 0)
        # prefix letters: P letters, b of them 7-bit, so that E starts byte-aligned
        seven = next(c for c, length in lengths.items() if length == 7)
        pos = len(w.bits)
        b7 = next(b for b in range(8) if (pos + 6 * (P - b) + 7 * b) % 8 == 0)
        prefix = [seven] * b7 + [ord("T")] * (P - b7)
        assert lengths[ord("T")] == 6
        for s in prefix:
            w.huff(codes[s], lengths[s])
        e_start = len(w.bits) // 8
        for s in syms:
            w.huff(codes[s], lengths[s])
        if completion is not None:
            w.huff(codes[completion], lengths[completion])
        forge_at = len(w.bits)
        for _ in range(16):
            w.huff(codes[0x41], 6)
        w.huff(codes[256], 15)
        w.put(1, 1)
        w.put(0, 2)
        w.align()
        w.put(1, 16)
        w.put(0xFFFE, 16)
        w.put(10, 8)
        letters = prefix + syms + ([completion] if completion is not None else [])
        return w, e_start, letters, E, forge_at

    bsize = 100
    for _ in range(20):
        w, e_start, letters, _, forge_at = build_R(bsize)
        cbytes = w.bytes()
        rlen = 18 + len(cbytes) + 8
        q_in_R = 18 + e_start + len(F0)
        new = rlen - q_in_R - 1
        if new == bsize:
            break
        bsize = new
    else:
        raise RuntimeError("no fixpoint")

    # forge the 16 letters so that CRC(Rdata) == CRC(F1data)
    def rdata(forge):
        return HEADER + bytes(letters) + bytes(forge) + b"\n"

    base = [0x41] * 16
    c0 = zlib.crc32(rdata(base))
    target = zlib.crc32(F1data)
    cols = []
    for i in range(16):
        for bit in (1, 2, 3, 4):
            f = list(base)
            f[i] |= 1 << bit
            cols.append(((zlib.crc32(rdata(f)) ^ c0), (i, bit)))
    # gaussian elimination over GF(2)
    need = target ^ c0
    rows = [(v, 1 << k) for k, (v, _) in enumerate(cols)]
    basis = []  # (vec, combo)
    for v, combo in rows:
        for bv, bc in basis:
            if v ^ bv < v:
                v ^= bv
                combo ^= bc
        if v:
            basis.append((v, combo))
            basis.sort(reverse=True)
    x = need
    combo = 0
    for bv, bc in basis:
        if x ^ bv < x:
            x ^= bv
            combo ^= bc
    assert x == 0, "forge failed"
    forge = list(base)
    for k, (_, (i, bit)) in enumerate(cols):
        if combo >> k & 1:
            forge[i] ^= 1 << bit
    Rdata = rdata(forge)
    assert len(Rdata) == T and zlib.crc32(Rdata) == target
    # rebuild the compressed stream with the forged letters (same lengths, 6-bit codes)
    w2 = BW()
    w2.bits = w.bits[:forge_at]
    for c in forge:
        w2.huff(codes[c], lengths[c])
    w2.bits += w.bits[forge_at + 96 :]
    cdata = w2.bytes()
    R = fake_block(cdata, zlib.crc32(Rdata), len(Rdata))
    assert zlib.decompress(cdata, -15) == Rdata, "R does not decode to its text"
    q_in_R = 18 + e_start + len(F0)
    p0_in_R = 18 + e_start
    assert (
        R[q_in_R : q_in_R + 4] == b"\x1f\x8b\x08\x04"
        and R[p0_in_R : p0_in_R + 4] == b"\x1f\x8b\x08\x04"
    )
    # the fake F1 decodes (libdeflate ignores the trailing bytes, as zlib's decompressobj)
    F1 = R[q_in_R:]
    d = zlib.decompressobj(-15)
    assert d.decompress(F1[18:-8]) == F1data
    # ---- the file
    head = bgzf(fasta_fast(2700, 2000, seed=11, prefix="h"), level=0)
    tail_text = fasta_fast(2700, 2000, seed=12, prefix="t")
    tail = bgzf(tail_text, level=0)
    lenhead = sum(map(len, head))
    p0 = lenhead + p0_in_R
    q = lenhead + q_in_R
    target_s = (p0 + q) // 2
    S0 = lenhead + len(R) + sum(map(len, tail)) + 28
    X = 2 * target_s - S0
    while X < 0:
        tail_text = tail_text[: tail_text.rfind(b"\n>", 0, len(tail_text) - 1) + 1]
        tail = bgzf(tail_text, level=0)
        S0 = lenhead + len(R) + sum(map(len, tail)) + 28
        X = 2 * target_s - S0
    pads = []
    while X > 0:
        size = min(X, 15000)
        if 0 < X - size < 100:
            size = X - 100
        rec = b">pad%d\n" % len(pads)
        seqlen = size - 31 - len(rec) - 1
        tb = block(rec + b"A" * seqlen + b"\n", level=0)
        assert len(tb) == size, (len(tb), size)
        pads.append(tb)
        X -= size
    out = b"".join(head) + R + b"".join(tail) + b"".join(pads) + EOF_BLOCK
    return out, len(out)

"""The longest run of a sample's tokens that occurs verbatim in the training data (the train-set check of
scale.evaluation.memorisation), found with rolling hashes and confirmed token by token.

For a sequence s = (s_1 .. s_L) and training blocks B_1 .. B_N (each of length L_B), the longest reproduced run

    m(s) = max { n : s_{i+1 .. i+n} = B_{b, j+1 .. j+n} for some i, b, j }      (0 if no token of s occurs)

counts runs inside one block: a run across the end of a block does not count (the blocks are what the
model was trained on, one at a time).

Search: "s holds a reproduced run of length n" is monotone in n (a run of n holds runs of n - 1), so m(s)
is found by binary search over n in [0, min(L, L_B)], every sequence at once: ceil(log2(L + 1)) rounds,
each one pass over the training blocks. In a round, sequence r asks for its own length n_r; every
length-n window of the sequences and of the blocks is hashed with a polynomial rolling hash mod 2^64,

    P_0 = 0,  P_{i+1} = P_i B + (t_{i+1} + 1)  (mod 2^64),    H(t_{i+1 .. i+n}) = P_{i+n} - P_i B^n  (mod 2^64),

and a hash found on both sides is only a candidate: a window counts once its tokens equal those of a
training window, compared token by token, so a hash collision never reports a run that is not there.
(Windows of the sequences sharing a hash are compared with one representative of that hash; a run is
missed only if two different windows of the sequences share a 64-bit hash and the second occurs in training.)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

BASE = 0x9E3779B97F4A7C15  # odd, fixed: the same inputs give the same hashes
WORK = 1 << 22  # tokens compared at once when candidate windows are confirmed


def prefix_hashes(tokens: np.ndarray) -> np.ndarray:
    """UInt64[R, L + 1]: the prefix hashes P of each row of tokens Int[R, L] (module docstring; the + 1
    keeps a token 0 from vanishing)."""
    t = tokens.astype(np.uint64) + np.uint64(1)
    P = np.zeros((t.shape[0], t.shape[1] + 1), dtype=np.uint64)
    base = np.uint64(BASE)
    for i in range(t.shape[1]):  # uint64 arrays wrap: arithmetic mod 2^64
        P[:, i + 1] = P[:, i] * base + t[:, i]
    return P


def window_hashes(P: np.ndarray, n: int) -> np.ndarray:
    """UInt64[R, L - n + 1]: H of every length-n window, P_{i+n} - P_i B^n mod 2^64, from prefix hashes P."""
    return P[:, n:] - P[:, :P.shape[1] - n] * np.uint64(pow(BASE, n, 1 << 64))


def windows(tokens: np.ndarray, rows: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """Int[K, n]: the windows tokens[rows_k, starts_k : starts_k + n]."""
    return tokens[rows[:, None], starts[:, None] + np.arange(n)]


def _equal(a: np.ndarray, ra, sa, b: np.ndarray, rb, sb, n: int) -> np.ndarray:
    """Bool[K]: window (ra_k, sa_k) of a equals window (rb_k, sb_k) of b, compared in batches of WORK tokens."""
    step = max(1, WORK // n)
    return np.concatenate([np.all(windows(a, ra[k:k + step], sa[k:k + step], n)
                                  == windows(b, rb[k:k + step], sb[k:k + step], n), axis=1)
                           for k in range(0, len(ra), step)] or [np.zeros(0, dtype=bool)])


def _first_per(groups: np.ndarray) -> np.ndarray:
    """Indices of the first entry of each distinct value of `groups`."""
    return np.unique(groups, return_index=True)[1]


class _Table:
    """The length-n windows of some rows of the sequences: their distinct hashes (sorted), one
    representative window per hash, and which hashes a training window has been confirmed for."""

    def __init__(self, seqs: np.ndarray, P: np.ndarray, rows: np.ndarray, n: int):
        self.seqs, self.rows, self.n = seqs, rows, n
        W = window_hashes(P[rows], n)
        self.width = W.shape[1]
        self.keys, first, self.inverse = np.unique(W.ravel(), return_index=True, return_inverse=True)
        self.rep_row, self.rep_start = rows[first // self.width], first % self.width
        self.confirmed = np.zeros(len(self.keys), dtype=bool)

    def scan(self, block: np.ndarray, P: np.ndarray) -> None:
        """Confirm the hashes that a window of the training rows `block` (prefix hashes P) holds."""
        T = window_hashes(P, self.n).ravel()
        idx = np.minimum(np.searchsorted(self.keys, T), len(self.keys) - 1)
        pos = np.flatnonzero(self.keys[idx] == T)
        key = idx[pos]
        width = block.shape[1] - self.n + 1
        while len(key):  # one try per hash; a collision (tokens differ) leaves that hash to its next window
            keep = ~self.confirmed[key]
            key, pos = key[keep], pos[keep]
            first = _first_per(key)
            k, p = key[first], pos[first]
            same = _equal(block, p // width, p % width, self.seqs, self.rep_row[k], self.rep_start[k], self.n)
            self.confirmed[k[same]] = True
            tried = np.ones(len(key), dtype=bool)
            tried[first] = False
            key, pos = key[tried], pos[tried]

    def found(self) -> np.ndarray:
        """Bool[len(rows)]: the row holds a window whose tokens are those of its confirmed representative."""
        ok = self.confirmed[self.inverse].reshape(len(self.rows), self.width)
        found = np.zeros(len(self.rows), dtype=bool)
        while (open_ := ok.any(1) & ~found).any():
            r = np.flatnonzero(open_)
            i = ok[r].argmax(1)
            k = self.inverse.reshape(ok.shape)[r, i]
            same = _equal(self.seqs, self.rows[r], i, self.seqs, self.rep_row[k], self.rep_start[k], self.n)
            found[r[same]] = True
            ok[r[~same], i[~same]] = False
        return found


def longest_runs(seqs: np.ndarray, train: Callable[[], Iterable[np.ndarray]], train_length: int) -> np.ndarray:
    """Int64[R]: m(s) of each row of seqs Int[R, L] (module docstring). train() yields the training blocks
    as Int[rows, train_length] chunks, and is called once per round of the search."""
    seqs = np.asarray(seqs, dtype=np.int64)
    P = prefix_hashes(seqs)
    lo = np.zeros(len(seqs), dtype=np.int64)  # a run of lo tokens is confirmed
    hi = np.full(len(seqs), min(seqs.shape[1], train_length), dtype=np.int64)  # no run is longer than hi
    while (active := lo < hi).any():
        mid = (lo + hi + 1) // 2
        tables = {n: _Table(seqs, P, np.flatnonzero(active & (mid == n)), n) for n in np.unique(mid[active]).tolist()}
        for block in train():
            block = np.asarray(block, dtype=np.int64)
            Pb = prefix_hashes(block)
            for table in tables.values():
                table.scan(block, Pb)
        found = np.zeros(len(seqs), dtype=bool)
        for table in tables.values():
            found[table.rows] = table.found()
        lo = np.where(active & found, mid, lo)
        hi = np.where(active & ~found, mid - 1, hi)
    return lo


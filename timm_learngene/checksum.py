"""The per-tensor checksum stored in a pool file's metadata (format 1, key ``learngene_pool_sum64``).

Changing how it is computed changes the file format: every pool saved before would fail its checks
(``tests/test_known_values.py`` pins the value of a fixed tensor).
"""
import numpy as np
import torch

__all__ = ['checksum', 'checksum_bytes']


def checksum(t: torch.Tensor) -> str:
    """A tensor's checksum, as 16 hex digits: the sum modulo 2**64 of its bytes (as stored in safetensors:
    contiguous, little-endian) read as little-endian 64-bit words, the last word zero-padded.

    Any flipped bit, and any damage confined to one word, changes it; random damage to several words goes
    unnoticed with odds of 2**-64. It is not a cryptographic hash (whoever can rewrite the tensors can rewrite
    the metadata too). Chosen for speed: numpy sums ~3.5x faster than zlib's Adler-32 on the dev CPU, which
    keeps verifying a descendant's tensors a small part of loading them."""
    data = (t if t.is_contiguous() and t.device.type == 'cpu' else t.detach().cpu().contiguous())
    return checksum_bytes(data.reshape(-1).view(torch.uint8).numpy())


def checksum_bytes(data) -> str:
    """:func:`checksum` of a buffer of bytes (a uint8 array or anything numpy reads as one)."""
    data = np.frombuffer(data, dtype=np.uint8)
    whole = len(data) // 8 * 8
    total = int(data[:whole].view('<u8').sum(dtype=np.uint64)) if whole else 0
    if whole < len(data):
        total += int.from_bytes(data[whole:].tobytes().ljust(8, b'\0'), 'little')
    return f'{total % 2 ** 64:016x}'

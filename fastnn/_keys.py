"""Keys of fastnn's counter-based random generator (simd.h's fn_hash32).

Random numbers are a hash of (key, element index); the 64-bit key comes from a seed
and a step counter, so the numbers depend on nothing else (not on the thread count).
Dropout (fastnn.ops.dropout) and augmentation (fastnn.augment) key their draws here.
"""

MASK64 = (1 << 64) - 1


def splitmix64(z):
    """The SplitMix64 finalizer of the 64-bit integer z: a bijective mix of its bits."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def random_key(seed, step):
    """The 64-bit key of the counter-based generator for (seed, step)."""
    return splitmix64(splitmix64(int(seed) & MASK64) ^ (int(step) & MASK64))

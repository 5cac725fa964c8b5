"""Compiled kernels. Call them through fastnn.ops, which validates every argument."""

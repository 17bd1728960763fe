"""Benchmarks of the book's code against peers, run on demand with `make bench`."""

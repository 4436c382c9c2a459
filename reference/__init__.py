"""The original Chatterbox algorithms in plain PyTorch / transformers, beside the product.

The exactness tests compare against these and the benchmarks time them as the baseline, so they
live in neither tree: ``reference.t3.ReferenceT3`` is the original's T3 inference loop, and
``reference.recorder`` a vLLM logits processor that records what our engine computed at each step
so it can be compared with the reference. Not part
of the installed package (a top-level ``reference`` has no place in site-packages); it is
imported from the repository root, which pytest (``tests/`` is a package) and the benchmarks
(``sys.path`` set from their own location) put on the path.
"""

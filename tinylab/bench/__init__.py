"""Benchmarks, all in one place and all behind one command, `python -m tinylab.bench WHAT`.

    matmul | train | vram | profile | fit | check   a training step on a CUDA GPU (bench.gpu)
    decode                                          sampling speed, CPU or GPU (bench.decode)
    loader                                          pre-tokenization and loader speed (bench.loader)

Each figure the README or docs/benchmarks.md reports comes from one of these, with its command.
They are scripts, not tests: nothing here asserts a speed.
"""

"""Benchmarks, all in one place and all behind one command, `python -m tinylab.bench WHAT`.

    matmul | train | vram | profile | fit | check   a training step on a CUDA GPU (bench.gpu)
    decode                                          sampling speed, CPU or GPU (bench.decode)
    loader                                          pre-tokenization and loader speed (bench.loader)

and one standalone script, `python -m tinylab.bench.lm_head`: lm_head + cross-entropy in bf16
against FP8 on a CUDA GPU, per micro-batch and per piece: quantisation, GEMMs, loss kernel (bench.lm_head).

Each figure the README or docs/benchmarks.md reports comes from one of these, with its command.
They are scripts, not tests: nothing here asserts a speed.
"""

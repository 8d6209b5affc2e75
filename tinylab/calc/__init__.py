"""Architecture calculators: exact counts, FLOPs, token budgets, training time and training VRAM.

Pure arithmetic on a GPTConfig, no torch needed, so the architecture notebook and the CLI
answer "how big, how slow, does it fit" on any machine:

    python -m tinylab.calc --preset ittybitty --gpu-mem-gb 24 --batch-sizes 8,16,32,48,64
"""
from .counts import (CHINCHILLA_RATIO, GPU_CAPABILITY, GPU_PEAK_FLOPS, flops_per_token, fp8_capable,  # noqa: F401
                     gpu_has_fp8, gpu_peak_flops, param_counts, tokens_for_ratio, training_time_s)
from .vram import (GiB, VRAM_GROUPS, activation_bytes_per_token, group_vram, max_device_batch,  # noqa: F401
                   vram_estimate)

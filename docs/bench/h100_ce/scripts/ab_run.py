"""(With fp8_bwd_hybrid.patch applied: `patch -p1 < docs/bench/h100_ce/scripts/fp8_bwd_hybrid.patch`.)
python -m tinylab.train with --fp8-lm-head meaning the hybrid (logits in bf16, backward GEMMs in FP8) when the
first argument is 'hybrid'; else unchanged."""
import sys
import tinylab.model as M
if sys.argv[1] == "hybrid":
    M.LOSS_KERNELS["chunked-fp8"] = "fp8-bwd"
from tinylab.train import main
sys.exit(main(sys.argv[2:]))

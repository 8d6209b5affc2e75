"""python -m tinylab.train, with FP8's e5m2 gradient rounded stochastically when the first argument is 'sr'
(to nearest when 'rtn' or 'plain')."""
import sys
import tinylab.kernels as K
K.FP8_STOCHASTIC = sys.argv[1] == "sr"
from tinylab.train import main
sys.exit(main(sys.argv[2:]))

from kernels.paged_prefill import paged_prefill
from kernels.copy_blocks import copy_blocks
from kernels.swap_blocks import swap_blocks

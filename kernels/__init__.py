from kernels.paged_prefill import paged_prefill
from kernels.copy_blocks import copy_blocks
from kernels.swap_blocks import swap_blocks
from kernels.write_kv import write_kv
from kernels.paged_decode import paged_decode
from kernels.decode_workspace import DecodeWorkspace

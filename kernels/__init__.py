from kernels.paged_prefill import paged_prefill

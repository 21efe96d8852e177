"""tinygrok: a from-scratch NumPy + Numba transformer that groks modular arithmetic on a CPU.

The pieces, in the order data flows through them:

- ``autograd``  : ``Tensor`` and reverse-mode differentiation over NumPy arrays
- ``gradcheck`` : finite-difference check of any gradient
- ``attention`` : Numba softmax-attention kernels that hand back the attention matrices
- ``nn``, ``model`` : the paper's 2-layer transformer
- ``adamw``     : AdamW with decoupled weight decay and a linear warm-up
- ``tasks``     : x+y, x-y, x/y mod p and permutation composition in S5
- ``train``, ``run`` : the training loop and its command line
- ``analysis``, ``plots`` : what a run directory tells about grokking
"""

__version__ = "0.1.0"

"""Token ops: reference semantics (``reference``) and the ``torch.ops.dtp`` custom ops."""

from .library import token_reconstruct, token_split
from .reference import keep_mask

__all__ = ["keep_mask", "token_split", "token_reconstruct"]

"""Loading the released checkpoints (and our own safetensors files) with clear errors.

`load_checkpoint(model, path)` reads `.safetensors` files with safetensors and anything
else with `torch.load(weights_only=True)` (the released Vim/VMamba `.pth` files pickle an
`argparse.Namespace` of training arguments, which is allow-listed). Files that need
arbitrary unpickling are refused unless the caller opts in with `allow_unsafe_pickle=True`
(CLI: `--allow-unsafe-pickle`). The state dict is located inside the usual layouts
(`model`, `model_ema`, `state_dict`, or a bare dict of tensors), DDP's `module.` prefix is
stripped, the model's own `filter_state_dict` maps legacy names/shapes, and the result is
checked against `model.state_dict()` before loading so a wrong file gives one readable
error (with a guess of which registered model the file belongs to).
"""
from qmamba.checkpoint.diagnose import guess_model
from qmamba.checkpoint.load import load_checkpoint, save_checkpoint
from qmamba.checkpoint.read import read_checkpoint
from qmamba.checkpoint.state_dict import extract_state_dict, strip_prefix

__all__ = ["extract_state_dict", "guess_model", "load_checkpoint", "read_checkpoint", "save_checkpoint",
           "strip_prefix"]

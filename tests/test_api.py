"""The top-level API a user types first."""
import torch

import qmamba


def test_top_level_api_quantizes_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = qmamba.create_model("vim_tiny", img_size=28, in_chans=1, patch_size=4, stride=4,
                                embed_dim=16, depth=1, num_classes=10).eval()
    x = torch.randn(8, 1, 28, 28)
    config = qmamba.QuantConfig.from_recipe("minmax", w_bits=8, a_bits=8, calib_size=8)
    qmodel = qmamba.quantize(model, config, [(x, None)])
    qmamba.save_quantized(qmodel, tmp_path / "q")
    assert torch.equal(qmamba.load_quantized(tmp_path / "q")(x), qmodel(x))
    assert "vim_tiny" in qmamba.list_models()

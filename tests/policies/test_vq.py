"""VQ-VAE tokenizer: shapes, code range, round trip, training reduces reconstruction loss, save/load."""
from __future__ import annotations

import torch

from policies.config import DriveVLAW0Config
from policies.vq import DriveVLAW0VQVAE
from tests.policies.frames import road_frames


def _model(seed: int = 0) -> DriveVLAW0VQVAE:
    torch.manual_seed(seed)
    return DriveVLAW0VQVAE(DriveVLAW0Config.preset("tiny"))


@torch.no_grad()
def test_shapes_range_and_round_trip():
    model = _model().eval()
    cfg = model.config
    frames = road_frames(2, cfg.image_height, cfg.image_width)
    codes = model.encode(frames)
    assert codes.shape == (2, *cfg.image_grid) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < cfg.vq_codebook_size
    recon = model.decode(codes)
    assert recon.shape == frames.shape
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    # Decoding the codes of a decoded image is a fixed point of the code map only approximately;
    # the exact round trip is codes -> vectors -> nearest code.
    vectors = model.quantizer.lookup(codes).permute(0, 2, 3, 1).reshape(-1, cfg.vq_code_dim)
    assert torch.equal(model.quantizer.nearest(vectors).view_as(codes), codes)
    out = model(frames)
    assert out.reconstruction.shape == frames.shape and torch.equal(out.codes, codes)
    # The reconstruction term is L1 (VQGAN's): the mean absolute error of the straight-through reconstruction.
    assert torch.isclose(out.reconstruction_loss, (out.reconstruction - frames).abs().mean())


def test_training_reduces_reconstruction_loss_and_uses_codes():
    model = _model().train()
    cfg = model.config
    frames = road_frames(4, cfg.image_height, cfg.image_width, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        out = model(frames)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.reconstruction_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    model.eval()
    with torch.no_grad():
        codes = model.encode(frames)
        recon_err = float((model.decode(codes) - frames).abs().mean())
    assert codes.unique().numel() > 8
    assert recon_err < 0.5 * losses[0]


def test_save_load_round_trip(tmp_path):
    model = _model().train()
    frames = road_frames(2, model.config.image_height, model.config.image_width)
    model(frames)  # initialises and EMA-updates the codebook buffers
    model.eval().requires_grad_(False)
    model.save_pretrained(tmp_path)
    loaded = DriveVLAW0VQVAE.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)
    assert torch.equal(loaded.encode(frames), model.encode(frames))
    assert torch.equal(loaded.decode(model.encode(frames)), model.decode(model.encode(frames)))


@torch.no_grad()
def test_equal_codes_give_the_first_of_them_whatever_else_is_in_the_batch():
    # Restarts can copy one latent into two codes; which of them an argmin over matmul distances picks follows
    # rounding that depends on the batch's shape, so the quantizer answers with the first of equal codes.
    quantizer = _model().quantizer
    quantizer.codebook[7] = quantizer.codebook[3]
    assert quantizer._first_duplicate(torch.tensor([7, 3, 5])).tolist() == [3, 3, 5]
    latent = quantizer.codebook[7][None]
    others = torch.randn(999, latent.shape[1], generator=torch.Generator().manual_seed(0))
    assert quantizer.nearest(latent).tolist() == [3]
    assert quantizer.nearest(torch.cat([others, latent]))[-1].item() == 3

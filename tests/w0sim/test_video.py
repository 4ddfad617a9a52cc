"""w0sim.video: the contact sheet's grid of evenly spaced frames, and mp4 frames padded to even sides."""
import imageio.v2 as imageio
import numpy as np

from w0sim.video import contact_sheet, write_mp4


def test_single_channel_frames_tile_unchanged_as_gray_and_the_unused_cells_stay_white():
    """Five 4 x 6 x 1 frames of values 10..50: a 2 x 4 grid of 4 x 6 cells, frame k in cell k with its value in
    all three channels, the last three cells white (255)."""
    frames = [np.full((4, 6, 1), 10 * (k + 1), np.uint8) for k in range(5)]
    sheet = contact_sheet(frames)
    assert sheet.shape == (8, 24, 3) and sheet.dtype == np.uint8
    cells = [sheet[r * 4:(r + 1) * 4, c * 6:(c + 1) * 6] for r in range(2) for c in range(4)]
    for k in range(5):
        assert (cells[k] == 10 * (k + 1)).all()
    assert all((cell == 255).all() for cell in cells[5:])


def test_odd_sized_frames_are_padded_with_their_own_edge_for_the_encoder(tmp_path):
    """yuv420p needs even sides: a 33 x 47 frame is written 34 x 48, the added row and column repeating the edge
    (a uniform grey frame stays uniform grey, not bordered in black)."""
    frames = [np.full((33, 47, 3), 180, np.uint8)] * 3
    path = write_mp4(frames, tmp_path / "odd.mp4", fps=5)
    read = np.stack(imageio.mimread(path))
    assert read.shape == (3, 34, 48, 3)
    assert np.abs(read.astype(int) - 180).max() <= 3  # H.264's rounding, nowhere a dark border

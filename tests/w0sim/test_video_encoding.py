"""w0sim.video in full: the mp4's frame rate, size and encoder settings, the edge padding to even sides, and every cell
of a contact sheet (which frames it picks, where each goes, the white left over, the error for no frames)."""
from __future__ import annotations

import re

import imageio.v2 as imageio
import numpy as np
import pytest

from w0sim.video import _even, contact_sheet, write_mp4


def read(path):
    with imageio.get_reader(path) as reader:
        return np.stack([frame for frame in reader]), reader.get_meta_data()


def grey_frames(count: int, shape=(4, 6)) -> list[np.ndarray]:
    """Frame k uniform at 10 * (k + 1) (distinct up to k = 24)."""
    return [np.full((*shape, 3), 10 * (k + 1), np.uint8) for k in range(count)]


def cells(sheet: np.ndarray, rows: int, columns: int, h: int = 4, w: int = 6) -> list[np.ndarray]:
    assert sheet.shape == (rows * h, columns * w, 3) and sheet.dtype == np.uint8
    return [sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] for r in range(rows) for c in range(columns)]


def values(sheet: np.ndarray, rows: int, columns: int) -> list[int]:
    """Each cell's single value (every cell is uniform)."""
    out = []
    for cell in cells(sheet, rows, columns):
        assert (cell == cell[0, 0, 0]).all()
        out.append(int(cell[0, 0, 0]))
    return out


def test_write_mp4_plays_at_10_fps_by_default_into_a_folder_it_creates_and_returns_the_path(tmp_path):
    """The default frame rate is 10 fps; the parent folders are made (parents too); a str path comes back a Path;
    H.264 (libx264) at quality 8, i.e. x264's constant rate factor 10, in yuv420p."""
    target = tmp_path / "a" / "b" / "clip.mp4"
    returned = write_mp4(grey_frames(3, (34, 48)), str(target))
    assert returned == target and isinstance(returned, type(target))
    frames, meta = read(target)
    assert frames.shape == (3, 34, 48, 3)
    assert meta["fps"] == 10.0 and meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert re.findall(rb"crf=[0-9.]+", target.read_bytes()) == [b"crf=10.0"]  # x264's settings in the stream


def test_write_mp4_into_an_existing_folder_at_the_given_fps(tmp_path):
    target = tmp_path / "clip.mp4"
    assert write_mp4(grey_frames(2, (34, 48)), target, fps=5) == target
    frames, meta = read(target)
    assert frames.shape == (2, 34, 48, 3) and meta["fps"] == 5.0


@pytest.mark.parametrize("shape, padded", [((33, 47), (34, 48)), ((35, 45), (36, 46)), ((34, 48), (34, 48)),
                                           ((3, 4), (4, 4)), ((4, 5), (4, 6))])
def test_an_odd_side_gets_one_more_row_or_column_repeating_the_edge(shape, padded):
    """yuv420p needs even sides: one row at the bottom and/or one column at the right, copies of the last ones."""
    h, w = shape
    frame = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    out = _even(frame)
    assert out.shape == (*padded, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:h, :w], frame)
    if padded[0] > h:
        np.testing.assert_array_equal(out[h, :w], frame[h - 1])
    if padded[1] > w:
        np.testing.assert_array_equal(out[:h, w], frame[:, w - 1])
    if padded == (h + 1, w + 1):
        np.testing.assert_array_equal(out[h, w], frame[h - 1, w - 1])


def test_a_contact_sheet_of_no_frames_is_refused():
    with pytest.raises(ValueError) as err:
        contact_sheet([])
    assert str(err.value) == "contact_sheet needs at least one frame"


def test_a_contact_sheet_of_up_to_12_frames_holds_each_in_order_four_a_row():
    """Five frames: row 0 frames 0-3, row 1 frame 4 and three white cells."""
    assert values(contact_sheet(grey_frames(5)), 2, 4) == [10, 20, 30, 40, 50, 255, 255, 255]
    assert values(contact_sheet(grey_frames(1)), 1, 4) == [10, 255, 255, 255]
    assert values(contact_sheet(grey_frames(12)), 3, 4) == [10 * (k + 1) for k in range(12)]


def test_a_contact_sheet_of_more_than_12_frames_picks_12_evenly_spaced_first_and_last_included():
    """13 frames: linspace(0, 12, 12) = 0, 1.09, 2.18, 3.27, 4.36, 5.45, 6.55, 7.64, 8.73, 9.82, 10.91, 12, rounded:
    every frame but frame 6. 25 frames: 0, 2.18, 4.36, ... 24 rounded: 0 2 4 7 9 11 13 15 17 20 22 24."""
    assert values(contact_sheet(grey_frames(13)), 3, 4) == [10 * (k + 1) for k in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12)]
    frames = [np.full((4, 6, 3), k, np.uint8) for k in range(25)]
    assert values(contact_sheet(frames), 3, 4) == [0, 2, 4, 7, 9, 11, 13, 15, 17, 20, 22, 24]


def test_the_columns_and_the_number_of_frames_can_be_chosen():
    assert values(contact_sheet(grey_frames(5), columns=2), 3, 2) == [10, 20, 30, 40, 50, 255]
    assert values(contact_sheet(grey_frames(5), columns=1), 5, 1) == [10, 20, 30, 40, 50]
    # 5 frames, 3 of them: linspace(0, 4, 3) = 0, 2, 4
    assert values(contact_sheet(grey_frames(5), max_frames=3), 1, 4) == [10, 30, 50, 255]


def test_a_frame_of_another_size_is_resized_to_the_first_frames_cell():
    """The cells take the first frame's size; a 2 x 3 frame is stretched to 4 x 6 (uniform stays uniform)."""
    frames = [np.full((4, 6, 3), 10, np.uint8), np.full((2, 3, 3), 20, np.uint8), np.full((8, 12, 3), 30, np.uint8)]
    assert values(contact_sheet(frames), 1, 4) == [10, 20, 30, 255]
    frames = [np.full((2, 3, 3), 10, np.uint8), np.full((4, 6, 3), 20, np.uint8)]
    sheet = contact_sheet(frames, columns=2)
    assert sheet.shape == (2, 6, 3) and (sheet[:, :3] == 10).all() and (sheet[:, 3:] == 20).all()


def test_the_cells_keep_each_frames_pixels_and_colours():
    """Non-uniform RGB frames are copied pixel for pixel into their cells (no resize, no channel swap)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (4, 6, 3), dtype=np.uint8) for _ in range(3)]
    sheet = contact_sheet(frames, columns=2)
    assert sheet.shape == (8, 12, 3)
    np.testing.assert_array_equal(sheet[:4, :6], frames[0])
    np.testing.assert_array_equal(sheet[:4, 6:], frames[1])
    np.testing.assert_array_equal(sheet[4:, :6], frames[2])
    assert (sheet[4:, 6:] == 255).all()


def test_no_frames_is_an_error_and_no_file(tmp_path):
    with pytest.raises(ValueError) as refused:
        write_mp4(iter(()), tmp_path / "empty.mp4")
    assert str(refused.value) == f"{tmp_path / 'empty.mp4'}: no frames to write"
    assert not (tmp_path / "empty.mp4").exists()


def test_an_encode_ffmpeg_refuses_is_an_error_and_leaves_no_older_video_in_its_place(tmp_path, monkeypatch):
    """imageio's writer returns quietly when ffmpeg cannot open its encoder; write_mp4 says so, and an older file at
    the path does not pass for the new video."""
    import w0sim.video

    target = tmp_path / "v.mp4"
    write_mp4(grey_frames(2, (34, 48)), target)
    real = imageio.get_writer
    monkeypatch.setattr(w0sim.video.imageio, "get_writer", lambda path, **kw: real(path, **{**kw, "codec": "no-such"}))
    with pytest.raises(OSError) as refused:
        write_mp4(grey_frames(2, (34, 48)), target)
    assert str(refused.value) == f"ffmpeg wrote no video to {target} (its messages above say why)"
    assert not target.exists()

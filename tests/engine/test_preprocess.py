"""edge_ocr.engine.preprocess: decoding real and hostile files, resizing, cropping."""

from __future__ import annotations

import itertools
import struct
import zlib

import cv2
import numpy as np
import pytest

from edge_ocr.engine import preprocess
from edge_ocr.errors import ImageTooLarge, UnsupportedImage


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_probe_and_decode_every_supported_format(photo, ext):
    data = _encode(ext, photo)
    fmt, width, height = preprocess.probe_image(data)
    assert (width, height) == (53, 37)
    assert fmt == {".jpg": "jpeg", ".png": "png", ".bmp": "bmp", ".tiff": "tiff", ".webp": "webp"}[ext]
    assert preprocess.decode_image(data, max_megapixels=1).shape == (37, 53, 3)


def test_lossless_webp_header(photo):
    ok, buf = cv2.imencode(".webp", photo, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok
    assert preprocess.probe_image(buf.tobytes())[1:] == (53, 37)


def test_grey_and_alpha_pngs_decode_to_bgr(photo):
    grey = _encode(".png", photo[:, :, 0])
    rgba = _encode(".png", np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]))
    assert preprocess.decode_image(grey, 1).shape == (37, 53, 3)
    assert preprocess.decode_image(rgba, 1).shape == (37, 53, 3)


def _exif_app1(orientation: int) -> bytes:
    # A minimal big-endian TIFF header with one IFD entry: Orientation (0x0112), SHORT.
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def test_exif_orientation_is_applied(photo):
    jpeg = _encode(".jpg", photo)
    rotated = jpeg[:2] + _exif_app1(6) + jpeg[2:]  # 6 = rotate 90° clockwise to display
    assert preprocess.probe_image(rotated)[1:] == (53, 37)  # the header keeps stored size
    assert preprocess.decode_image(rotated, 1).shape == (53, 37, 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        # its length, never its bytes: a hard link to a secret dropped in the folder stays secret
        (b"s3cr3t-token\n", r"not a supported image \(expected JPEG, PNG, BMP, TIFF or WebP; 13 bytes with no image "
                             r"signature\)$"),
        # formats people send, named (an iPhone user could not tell HEIC from the first bytes shown before)
        (b"%PDF-1.7\n", "PDF is not supported: send each page as an image"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC/HEIF .* is not supported"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF is not supported"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 is not supported"),
        (b"GIF89a\x01\x00\x01\x00", "GIF is not supported"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG and other XML are not supported"),
        (b"II+\x00\x08\x00\x00\x00", "BigTIFF is not supported"),
        # BI_RLE8: OpenCV decoded it shifted and stretched, as status ok with wrong lines
        (b"BM" + b"\x00" * 12 + struct.pack("<IiiHHI", 40, 16, 16, 1, 8, 1) + b"\x00" * 20,
         "RLE-compressed BMP is not supported"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 10, 10) + b"\x08",
         "corrupt or truncated png"),  # cut inside IHDR, before its colour type
    ],
)
def test_non_images_are_refused_with_a_reason(data, message):
    with pytest.raises(UnsupportedImage, match=message):
        preprocess.decode_image(data, 50)


def test_truncated_jpeg_is_refused(photo):
    jpeg = _encode(".jpg", cv2.resize(photo, (640, 480)))
    with pytest.raises(UnsupportedImage):
        preprocess.decode_image(jpeg[:200], 50)


def test_corrupt_png_body_is_refused(photo):
    png = bytearray(_encode(".png", photo))
    png[60:80] = b"\x00" * 20  # inside the IDAT stream
    with pytest.raises(UnsupportedImage, match="corrupt or truncated png"):
        preprocess.decode_image(bytes(png), 50)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_decompression_bomb_is_refused_before_decoding():
    """A real 20000x20000 grey PNG: ~400 KB on disk, 400 MB (1.2 GB as BGR) once decoded."""
    width = height = 20000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    png += _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")
    assert len(png) < 2_000_000
    with pytest.raises(ImageTooLarge, match=r"20000x20000 \(400.0 MP\), over the 50 MP limit"):
        preprocess.decode_image(png, max_megapixels=50)


def _tiff_header(*entries: tuple[int, int, int]) -> bytes:
    """A little-endian TIFF's header and first directory: (tag, type, value) entries, count 1."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                     for tag, kind, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


@pytest.mark.parametrize("entries, message", [
    # libtiff takes the first of two widths, and an 8-byte (LONG8) value from elsewhere than the
    # entry: a probe that read them otherwise saw 10x10 where the decoder made 12000x12000
    (((256, 4, 12000), (257, 4, 12000), (256, 4, 10), (257, 4, 10)), "TIFF with an unusual width entry .*repeated"),
    (((256, 16, 40), (257, 16, 40)), r"TIFF with an unusual width entry \(type 16\)"),
])
def test_a_tiff_whose_size_could_be_read_two_ways_is_refused_before_decoding(entries, message):
    with pytest.raises(UnsupportedImage, match=message):
        preprocess.decode_image(_tiff_header(*entries), max_megapixels=50)


def test_an_image_over_the_decoders_own_side_limit_is_too_large_not_a_crash():
    """1,100,000 x 8 px is 8.8 MP, under the cap, but OpenCV refuses sides over 2^20 by raising."""
    strip = _encode(".tiff", np.zeros((8, 1_100_000), np.uint8))
    with pytest.raises(ImageTooLarge, match="1100000x8, over the decoder's limit of 1048576 px a side"):
        preprocess.decode_image(strip, max_megapixels=50)


def test_an_os2_bitmap_is_read_with_its_16_bit_sides():
    width, height = 20, 6
    row = bytes([0, 0, 255] * width) + b"\x00" * (-3 * width % 4)  # red, padded to 4 bytes
    pixels = row * height
    header = struct.pack("<IHHHH", 12, width, height, 1, 24)
    bmp = b"BM" + struct.pack("<IHHI", 14 + 12 + len(pixels), 0, 0, 14 + 12) + header + pixels
    assert preprocess.probe_image(bmp) == ("bmp", width, height)
    decoded = preprocess.decode_image(bmp, max_megapixels=1)
    assert decoded.shape == (height, width, 3) and decoded[0, 0].tolist() == [0, 0, 255]


def _png_with_exif(png: bytes, orientation: int) -> bytes:
    tiff = _exif_app1(orientation)[len(b"\xff\xe1") + 2 + len(b"Exif\x00\x00"):]  # the TIFF inside the JPEG segment
    return png[:33] + _png_chunk(b"eXIf", tiff) + png[33:]  # after the signature and IHDR


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_applied_by_hand_is_opencvs(photo, orientation):
    """The decode that keeps the alpha channel ignores the EXIF orientation, so it is applied by hand:
    exactly as OpenCV's colour decode does, for each of the eight."""
    png = _png_with_exif(_encode(".png", photo), orientation)
    by_opencv = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    stored = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert preprocess.exif_orientation(png[png.find(b"eXIf") + 4:]) == orientation
    np.testing.assert_array_equal(preprocess.oriented(stored, orientation), by_opencv)


def _ink_on_transparent(ink: int) -> np.ndarray:
    rgba = np.zeros((30, 80, 4), np.uint8)  # transparent black everywhere
    cv2.putText(rgba, "42", (5, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (ink, ink, ink, 255), 2)
    return rgba


def test_a_transparent_png_keeps_its_exif_orientation_and_its_contrast():
    """A PNG with an eXIf chunk (macOS screenshots carry one) took the colour decode for its
    orientation, which ignores alpha: black text on transparent black came out as a black page."""
    rgba = _ink_on_transparent(0)
    decoded = preprocess.decode_image(_png_with_exif(_encode(".png", rgba), 6), 1)
    upright = cv2.rotate(rgba, cv2.ROTATE_90_CLOCKWISE)
    assert decoded.shape == (80, 30, 3)
    assert (decoded[upright[:, :, 3] == 0] == 255).all() and (decoded[upright[:, :, 3] == 255] == 0).all()


@pytest.mark.parametrize("ext, params", [(".png", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tiff", [])])
@pytest.mark.parametrize("ink, background", [(0, 255), (255, 0)])
def test_text_on_a_transparent_background_keeps_its_contrast(ext, params, ink, background):
    """Transparent pixels are mostly stored black: dark text on them used to decode as a black
    page (a WebP's or a TIFF's alpha was not even looked at). They are filled with white behind
    dark text and with black behind light text."""
    rgba = _ink_on_transparent(ink)
    depths = (rgba, rgba.astype(np.uint16) * 257) if ext != ".webp" else (rgba,)  # 8 and 16 bits per channel
    for stored in depths:
        encoded = cv2.imencode(ext, stored, params)[1]
        decoded = preprocess.decode_image(encoded.tobytes(), max_megapixels=1)
        inked, clear = rgba[:, :, 3] == 255, rgba[:, :, 3] == 0  # (putText's edges are in between)
        assert decoded.shape == (30, 80, 3) and inked.any() and clear.any()
        assert (decoded[clear] == background).all() and (decoded[inked] == ink).all()


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_images_with_alpha_count_twice_against_the_megapixel_limit(ext):
    """That decode keeps 16-bit samples: a 394 KB 49 MP 16-bit RGBA PNG, under the 50 MP limit, took
    the daemon past 1 GB (the unit's MemoryMax). It counts as twice its pixels; 8 bits as before."""
    rgba = np.zeros((100, 120, 4), np.uint8)
    rgba[20:80, 30:90] = 255
    limit = 0.02  # MP: 12,000 px are under it, 24,000 over
    assert preprocess.decode_image(cv2.imencode(ext, rgba)[1].tobytes(), limit).shape == (100, 120, 3)
    deep = cv2.imencode(ext, rgba.astype(np.uint16) * 257)[1].tobytes()
    with pytest.raises(ImageTooLarge, match=r"100x120|120x100"):
        preprocess.decode_image(deep, limit)
    assert (preprocess.decode_image(deep, 2 * limit) == preprocess.decode_image(cv2.imencode(ext, rgba)[1].tobytes(),
                                                                                limit)).all()
    without_alpha = cv2.imencode(ext, rgba[:, :, :3].astype(np.uint16) * 257)[1].tobytes()  # decoded to 8 bits
    assert preprocess.decode_image(without_alpha, limit).shape == (100, 120, 3)


@pytest.mark.parametrize("channels", [3, 4])
def test_a_tiff_of_floating_point_samples_is_refused_from_its_header(channels):
    """No decode here takes float samples: refused after decoding them, a 535 KB 24 MP file cost 735 MB."""
    floats = cv2.imencode(".tiff", np.full((40, 60, channels), 0.5, np.float32))[1].tobytes()
    with pytest.raises(UnsupportedImage, match="floating-point samples"):
        preprocess.decode_image(floats, 50)


def test_paper_a_background_remover_made_transparent_is_kept_as_it_was_stored():
    """`convert -fuzz 8% -transparent white`: the paper's white is still stored under the
    transparent pixels, and the grey paper left opaque made the opaque pixels' mean light, so the
    fill was black: dark text on black."""
    page = np.full((40, 120, 3), 230, np.uint8)
    page[:, :60] = 190  # a shadow left opaque
    cv2.putText(page, "42", (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2)
    alpha = np.where(page[:, :, 0] == 230, 0, 255).astype(np.uint8)
    decoded = preprocess.decode_image(_encode(".png", np.dstack([page, alpha])), max_megapixels=1)
    np.testing.assert_array_equal(decoded, page)


def test_resize_for_detection_keeps_multiples_and_records_the_scale():
    image = np.zeros((720, 1280, 3), np.uint8)
    resized, transform = preprocess.resize_for_detection(image, limit_side=960, multiple=32)
    assert resized.shape[0] % 32 == 0 and resized.shape[1] == 960
    corner = transform.to_source(np.array([[960.0, resized.shape[0]]]))
    np.testing.assert_allclose(corner, [[1280, 720]], rtol=1e-5)


def test_crop_quad_straightens_a_rotated_line():
    image = np.full((200, 200, 3), 255, np.uint8)
    cv2.rectangle(image, (50, 90), (150, 110), (0, 0, 0), -1)
    quad = np.array([[50, 90], [150, 90], [150, 110], [50, 110]], np.float32)
    crop = preprocess.crop_quad(image, quad)
    assert crop.shape[:2] == (20, 100)
    assert crop.mean() < 40  # the crop is the black bar, not the white page


def test_tall_detected_crops_are_turned_to_horizontal():
    image = np.zeros((200, 200, 3), np.uint8)
    quad = np.array([[90, 20], [110, 20], [110, 180], [90, 180]], np.float32)
    assert preprocess.crop_quad(image, quad).shape[:2] == (20, 160)


def test_resize_for_recognition_pads_with_normalised_grey():
    crop = np.full((24, 48, 3), 255, np.uint8)
    tensor = preprocess.resize_for_recognition(crop, height=48, width=320)
    assert tensor.shape == (3, 48, 320) and tensor.dtype == np.float32
    assert np.allclose(tensor[:, :, :96], 1.0) and np.allclose(tensor[:, :, 96:], 0.0)


def _plate(background: tuple[int, int, int], size: tuple[int, int] = (24, 94)) -> np.ndarray:
    """A plate-like crop: ``background`` (BGR) with a white frame and six white glyph bars."""
    crop = np.full((*size, 3), background, np.uint8)
    h, w = size
    cv2.rectangle(crop, (1, 1), (w - 2, h - 2), (255, 255, 255), max(1, h // 24))
    for i in range(6):
        x = w * (i + 1) // 8
        cv2.rectangle(crop, (x, h // 4), (x + max(1, w // 40), 3 * h // 4), (255, 255, 255), -1)
    return crop


@pytest.mark.parametrize("background, colour", [((180, 70, 10), "blue"), ((0, 200, 230), "yellow"),
                                                ((60, 180, 40), "green")])
def test_a_plates_background_colour_is_most_of_it(background, colour):
    share = preprocess.plate_colour_share(_plate(background))
    assert share > 0.6, colour
    # the same plate in grey (a white or black plate, a photo at night) has none
    grey = cv2.cvtColor(cv2.cvtColor(_plate(background), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert preprocess.plate_colour_share(grey) == 0.0


def test_the_plate_colour_share_of_a_large_crop_is_that_of_its_shrunk_copy():
    small, large = _plate((180, 70, 10)), _plate((180, 70, 10), (480, 1880))
    assert abs(preprocess.plate_colour_share(large) - preprocess.plate_colour_share(small)) < 0.1
    half = large.copy()
    half[:, 940:] = 128  # half of it grey
    assert 0.35 < preprocess.plate_colour_share(half) < 0.55
    assert preprocess.plate_colour_share(np.zeros((0, 0, 3), np.uint8)) == 0.0
    assert preprocess.plate_colour_share(np.zeros((24, 94), np.uint8)) == 0.0  # one channel: not a colour image


@pytest.mark.parametrize("size", [(960, 544), (544, 960), (960, 960), (928, 608), (480, 640), (64, 32), (512, 96)])
@pytest.mark.parametrize("strip, overlap", [(512, 64), (384, 96), (288, 64)])
def test_strips_cover_the_image_with_their_overlap_in_one_shape(size, strip, overlap):
    plan = preprocess.plan_strips(size, strip, overlap, bucket=160)
    long, short = max(size), min(size)
    assert plan.axis == (0 if size[0] >= size[1] else 1)
    assert plan.starts[0] == 0 and all(s % 32 == 0 for s in plan.starts)
    assert plan.starts[-1] + strip >= long  # the last tile reaches the end
    assert all(b - a <= strip - overlap for a, b in itertools.pairwise(plan.starts))  # overlap at least `overlap`
    long_side, short_side = plan.tile[plan.axis], plan.tile[1 - plan.axis]
    assert long_side == strip and short_side % 160 == 0 and short <= short_side < short + 160
    owned = plan.owned()  # every row (column) has one owner, far from the owner's cut edges
    assert owned[0][0] == 0 and owned[-1][1] == long
    assert all(a[1] == b[0] for a, b in itertools.pairwise(owned))
    for index, (start, (lo, hi)) in enumerate(zip(plan.starts, owned)):
        assert start <= lo < hi <= start + strip
        if index > 0:
            assert lo - start >= overlap // 2
        if index < len(plan.starts) - 1:
            assert start + strip - hi >= overlap // 2


def test_strips_of_every_image_are_a_few_shapes_bounded_by_the_strip():
    shapes = {preprocess.plan_strips((h, w), 512, 64, 160).tile for h in range(32, 961, 32) for w in range(32, 961, 32)}
    assert len(shapes) <= 12
    assert max(h * w for h, w in shapes) == 512 * 960


def test_strip_plan_refuses_an_overlap_that_leaves_no_step():
    with pytest.raises(ValueError):
        preprocess.plan_strips((960, 544), 256, 240, 160)
    with pytest.raises(ValueError):
        preprocess.plan_strips((960, 544), 500, 64, 160)


def test_strip_tensor_is_the_normalised_pixels_then_the_mean_as_padding():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(640, 96, 3), dtype=np.uint8)
    plan = preprocess.plan_strips(image.shape[:2], 384, 64, 160)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    whole = preprocess.normalize(image, mean, std)
    for index, start in enumerate(plan.starts):
        tensor = preprocess.strip_tensor(image, plan, index, mean, std)
        assert tensor.shape == (1, 3, 384, 160) and tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor[0, :, :, :96], whole[:, start : start + 384])
        assert not tensor[0, :, :, 96:].any()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_transparent_tiff_is_turned_once(orientation):
    """OpenCV's decode that keeps the alpha channel applies a TIFF's own Orientation (unlike a PNG's
    eXIf or a WebP's EXIF): turned again by hand, it came out turned twice."""
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[5:15, 30:40] = (255, 0, 0, 255)
    files = [_with_tiff_entry(_encode(".tiff", pixels), 274, 3, orientation)  # Orientation, SHORT
             for pixels in (rgba, np.ascontiguousarray(rgba[..., :3]))]
    transparent, opaque = (preprocess.decode_image(data, max_megapixels=1) for data in files)
    np.testing.assert_array_equal(transparent, opaque)  # the colour decode's turn, which was right


def test_a_fourth_sample_that_is_no_alpha_is_not_taken_for_one():
    """ExtraSamples 0 (unspecified: a film scanner's infrared) is not transparency: a dark 4th channel
    whitened the whole page."""
    page = np.full((30, 80, 4), 200, np.uint8)
    page[..., 3] = 10
    cv2.putText(page, "42", (5, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0, 10), 2)
    data = bytearray(_encode(".tiff", page))
    assert preprocess._tiff_tag(bytes(data), 338) is None  # OpenCV writes no ExtraSamples: add it, as 0
    tiff = _with_tiff_entry(bytes(data), 338, 3, 0)
    assert not preprocess._has_alpha("tiff", tiff)
    decoded = preprocess.decode_image(tiff, max_megapixels=1)
    assert decoded.min() == 0 and decoded.max() == 200  # the text and the page, not a whitened page


def test_float_samples_with_alpha_are_refused_not_a_crash():
    rgba = np.zeros((8, 8, 4), np.float32)
    with pytest.raises(UnsupportedImage):
        preprocess.decode_image(_encode(".tiff", rgba), max_megapixels=1)


def _with_tiff_entry(tiff: bytes, tag: int, kind: int, value: int) -> bytes:
    """A little-endian TIFF with one SHORT entry added to its first directory (moved to the end)."""
    (ifd,) = struct.unpack("<I", tiff[4:8])
    (count,) = struct.unpack("<H", tiff[ifd : ifd + 2])
    entries = [tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count)]
    entries.append(struct.pack("<HHIHH", tag, kind, 1, value, 0))
    entries.sort(key=lambda e: struct.unpack("<H", e[:2])[0])
    (following,) = struct.unpack("<I", tiff[ifd + 2 + 12 * count : ifd + 6 + 12 * count])
    moved = len(tiff) + (len(tiff) & 1)
    table = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", following)
    return tiff[:4] + struct.pack("<I", moved) + tiff[8:] + b"\0" * (moved - len(tiff)) + table

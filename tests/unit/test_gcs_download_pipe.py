"""A GCS download through the proxy: one GET in a thread of its own, handed to the response
in bounded pieces, its end held back until google-cloud-storage has checked the checksum."""

from __future__ import annotations

import threading
import time

import pytest

from provisioning.artifact_streaming import kit_artifacts as ka

MIB = 1024 * 1024


def pieces(total: int, size: int = 256 * 1024):
    data = bytes(range(256)) * (size // 256)
    for offset in range(0, total, size):
        yield data[: min(size, total - offset)]


def test_the_bytes_come_whole_and_in_order():
    sent = b"".join(pieces(20 * MIB + 12345))

    def download(pipe):
        for offset in range(0, len(sent), 300_000):
            pipe.write(sent[offset : offset + 300_000])

    assert b"".join(ka._piped(download)) == sent


def test_a_checksum_failure_at_the_end_breaks_the_response_before_its_last_bytes():
    """google-cloud-storage raises DataCorruption only after the last byte was written:
    the client must not get a complete body (whole pieces: every byte reaches the pipe)."""
    total = 2 * ka.DOWNLOAD_CHUNK_BYTES

    def download(pipe):
        for piece in pieces(total):
            pipe.write(piece)
        raise ValueError("Checksum mismatch while downloading")

    received = 0
    with pytest.raises(ValueError, match="Checksum mismatch"):
        for chunk in ka._piped(download):
            received += len(chunk)
    assert received <= total - ka.HELD_BACK_BYTES


def test_a_client_that_goes_away_stops_the_download_and_little_was_read_ahead():
    written = []
    ended = threading.Event()

    def download(pipe):
        try:
            for piece in pieces(10_000 * MIB):  # far more than is ever read
                pipe.write(piece)
                written.append(len(piece))
        finally:
            ended.set()

    stream = ka._piped(download)
    next(stream)
    time.sleep(0.5)  # let the download run ahead as far as the pipe lets it
    ahead = sum(written)
    stream.close()  # the response ends: Starlette closes the iterator
    assert ended.wait(10), "the download thread kept going after the client left"
    # The pieces waiting, the one being filled and the one sent: not the object's size.
    bound = (ka.PIPE_PIECES + 3) * ka.DOWNLOAD_CHUNK_BYTES
    assert ahead <= bound, f"{ahead / MIB:.0f} MiB read ahead"

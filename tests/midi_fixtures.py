"""Hand-built Standard MIDI Files for the reader tests, each named after the edge case it holds.

Two ways of writing a file: :func:`smf` assembles raw bytes (for what mido will not write: running status
across a meta event, broken headers, bad status bytes), and :func:`mido_smf` lays out mido messages given
at *absolute* ticks (for files whose musical content is the point). Nothing here imports the reader.
"""

from __future__ import annotations

import io

import mido

EOT = b"\x00\xff\x2f\x00"  # End of Track with delta 0


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity (big-endian groups of 7 bits, high bit = more follows)."""
    if value < 0:
        raise ValueError(value)
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def chunk(kind: bytes, body: bytes) -> bytes:
    return kind + len(body).to_bytes(4, "big") + body


def header(fmt: int = 1, n_tracks: int = 1, division: int = 480) -> bytes:
    return chunk(b"MThd", fmt.to_bytes(2, "big") + n_tracks.to_bytes(2, "big") + division.to_bytes(2, "big"))


def smf(*track_bodies: bytes, fmt: int = 1, division: int = 480, declared: int | None = None) -> bytes:
    """Header plus one ``MTrk`` chunk per body (bodies are raw event bytes, End of Track included or not)."""
    n = len(track_bodies) if declared is None else declared
    return header(fmt, n, division) + b"".join(chunk(b"MTrk", body) for body in track_bodies)


def note_track(*extra: bytes) -> bytes:
    """A track body holding one note (pitch 60, ticks 0-96), then ``extra`` events, then End of Track."""
    return b"\x00\x90\x3c\x40" + b"\x60\x80\x3c\x00" + b"".join(extra) + EOT


def mido_smf(*tracks: list[tuple[int, mido.Message | mido.MetaMessage]], ticks_per_beat: int = 480,
             smf_type: int = 1) -> bytes:
    """Write tracks given as ``[(absolute_tick, message), ...]`` (kept in list order within a tick).

    mido appends an End of Track (delta 0) to a track that lacks one; give an explicit
    ``MetaMessage("end_of_track")`` to end a track later than its last event.
    """
    mf = mido.MidiFile(type=smf_type, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        track = mido.MidiTrack()
        prev = 0
        for tick, msg in sorted(events, key=lambda e: e[0]):  # sorted() is stable
            track.append(msg.copy(time=tick - prev))
            prev = tick
        mf.tracks.append(track)
    out = io.BytesIO()
    mf.save(file=out)
    return out.getvalue()


def on(tick: int, pitch: int, velocity: int = 64, channel: int = 0):
    return tick, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(tick: int, pitch: int, channel: int = 0, as_note_on: bool = False):
    if as_note_on:
        return tick, mido.Message("note_on", note=pitch, velocity=0, channel=channel)
    return tick, mido.Message("note_off", note=pitch, velocity=64, channel=channel)


def cc(tick: int, control: int, value: int, channel: int = 0):
    return tick, mido.Message("control_change", control=control, value=value, channel=channel)


def program(tick: int, number: int, channel: int = 0):
    return tick, mido.Message("program_change", program=number, channel=channel)


def tempo(tick: int, us_per_beat: int):
    return tick, mido.MetaMessage("set_tempo", tempo=us_per_beat)


def end_of_track(tick: int):
    return tick, mido.MetaMessage("end_of_track")


# -- named edge cases (raw bytes) -------------------------------------------------------------------

def running_status_across_meta() -> bytes:
    """note_on 60 at 0; a text meta event; then ``3C 00`` with no status byte at tick 96 (running 0x90)."""
    return smf(b"\x00\x90\x3c\x40" + b"\x00\xff\x01\x03abc" + b"\x60\x3c\x00" + EOT)


def running_status_at_track_start() -> bytes:
    return smf(b"\x00\x3c\x40" + EOT)


def running_status_after_sysex() -> bytes:
    return smf(b"\x00\x90\x3c\x40" + b"\x00\xf0\x02\x01\xf7" + b"\x10\x3c\x00" + EOT)


def zero_division() -> bytes:
    return smf(note_track(), division=0)


def smpte_division() -> bytes:
    return smf(note_track(), division=0xE728)  # -25 frames per second, 40 ticks per frame


def format_2() -> bytes:
    return smf(note_track(), fmt=2)


def format_3() -> bytes:
    return smf(note_track(), fmt=3)


def short_header() -> bytes:
    """An ``MThd`` chunk declaring 4 bytes (the standard needs 6), padded so the file is long enough."""
    return chunk(b"MThd", b"\x00\x01\x00\x01") + b"\x01\xe0" + chunk(b"MTrk", note_track())


def only_empty_tracks() -> bytes:
    return smf(EOT, EOT, EOT)


def no_track_chunks() -> bytes:
    return header(1, 0, 480)


def only_releases() -> bytes:
    return smf(b"\x00\x80\x3c\x40\x10\x90\x3e\x00" + EOT)


def missing_tracks() -> bytes:
    return smf(note_track(), note_track(), declared=3)


def data_byte_high() -> bytes:
    return smf(b"\x00\x90\x3c\x80" + EOT)


def five_byte_delta() -> bytes:
    return smf(b"\x81\x80\x80\x80\x00\x90\x3c\x40" + EOT)


def five_byte_meta_length() -> bytes:
    return smf(b"\x00\x90\x3c\x40" + b"\x00\xff\x01\x80\x80\x80\x80\x00" + EOT)


def system_common_in_track() -> bytes:
    """0xF1 (MIDI time-code quarter frame) between two channel events."""
    return smf(b"\x00\x90\x3c\x40" + b"\x00\xf1\x10" + b"\x10\x80\x3c\x00" + EOT)


def realtime_in_track() -> bytes:
    return smf(b"\x00\x90\x3c\x40" + b"\x00\xf8" + b"\x10\x80\x3c\x00" + EOT)


def chunk_longer_than_file() -> bytes:
    body = note_track()
    return header(1, 1, 480) + b"MTrk" + (len(body) + 10).to_bytes(4, "big") + body


def event_cut_by_chunk_end() -> bytes:
    """A note_on whose second data byte lies past the end of its chunk."""
    return smf(b"\x00\x90\x3c\x40\x10\x80\x3c", b"\x00\x90\x3c\x40" + EOT)


def with_unknown_chunk() -> bytes:
    """An unknown chunk type between the header and the track: readers must skip it."""
    return header(1, 1, 480) + chunk(b"XFIH", b"\x01\x02\x03") + chunk(b"MTrk", note_track())


def with_trailing_unknown_chunk() -> bytes:
    """All declared tracks, then an unknown chunk (8-byte header, 8-byte body)."""
    return smf(note_track()) + chunk(b"XFKM", b"abcdefgh")


def too_many_tracks(n_empty: int = 32768) -> bytes:
    """``n_empty`` empty tracks, then one holding a note that is never released (format 1)."""
    last = b"\x00\x90\x3c\x40" + b"\x10\xff\x2f\x00"
    return header(1, n_empty + 1, 480) + chunk(b"MTrk", EOT) * n_empty + chunk(b"MTrk", last)


def huge_tick_note(at_least: int = 1 << 39) -> bytes:
    """A note at tick 0 (pitch 64) and one (pitch 60) after enough maximal deltas to pass ``at_least``."""
    step = (1 << 28) - 1  # the largest 4-byte delta: FF FF FF 7F
    n = at_least // step + 1
    pad = (b"\xff\xff\xff\x7f" + b"\xff\x01\x00") * n  # empty text meta events
    body = b"\x00\x90\x40\x40\x10\x80\x40\x00" + pad + b"\x00\x90\x3c\x40\x10\x80\x3c\x00" + EOT
    return smf(body, fmt=0)

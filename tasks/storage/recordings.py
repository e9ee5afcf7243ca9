"""Recorded audio for the Hilbert images: find, read, fold to mono and resample a piece's sound file.

A MIDI file of a folder/URI source "has a recording" when a sound file with the same stem lies next to it
(``a/b.midi`` + ``a/b.wav``; MAESTRO's full archive is laid out that way). :func:`read_recording` reads
it with soundfile (anything libsndfile decodes: WAV, FLAC, OGG/Vorbis/Opus, AIFF, MP3, …), folds it to
mono by the mean of its channels (the paper's stereo → mono) and :func:`resample` brings it to the
dataset's sample rate. Unreadable files raise :class:`AudioError` with a kind and a message, which the
dataset build records per piece instead of failing the run.

Reads local paths or fsspec URIs (credentials from the settings); resampling is the kernel in
:mod:`tasks.kernels.resample`. Nothing here knows about Prefect.
"""

from __future__ import annotations

import os

import numpy as np

from tasks.kernels.resample import resample

# sound file suffixes paired with MIDI files, in order of preference when one stem has several
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".mp3")
AUDIO_MODES = ("auto", "recorded", "synth")
READ_BLOCK_FRAMES = 1 << 20  # frames read at a time: peak memory stays near the mono result


class AudioError(Exception):
    """A recording that cannot be used: ``kind`` (``audio_unreadable``, ``audio_empty``, ``audio_invalid``)
    and a message for people."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def is_audio_path(path: str) -> bool:
    """Whether ``path`` names a sound file this module pairs with MIDI files (by suffix, any case)."""
    return path.lower().endswith(AUDIO_SUFFIXES)


def audio_preference(path: str) -> int:
    """Rank of a sound file's suffix in :data:`AUDIO_SUFFIXES` (lower wins)."""
    low = path.lower()
    for i, suffix in enumerate(AUDIO_SUFFIXES):
        if low.endswith(suffix):
            return i
    return len(AUDIO_SUFFIXES)


# -- reading ------------------------------------------------------------------------------------------


def _open(uri: str, storage_options: dict | None):
    """A path soundfile opens itself, or an fsspec file object for remote URIs (credentials from settings
    unless ``storage_options`` are given)."""
    if "://" not in uri:
        if not os.path.isfile(uri):  # libsndfile would only say "System error"
            raise AudioError("audio_unreadable", "the file does not exist (moved or deleted since it was listed?)")
        return None, uri
    import fsspec

    if storage_options is None:
        from tasks.storage.settings import get_settings

        storage_options = get_settings().storage_options(uri)
    fh = fsspec.open(uri, "rb", **storage_options).open()
    return fh, fh


def read_audio(uri: str, storage_options: dict | None = None,
               block_frames: int = READ_BLOCK_FRAMES) -> tuple[np.ndarray, int]:
    """Read a sound file as mono float32 and its sample rate.

    Channels are averaged frame by frame (:func:`tasks.kernels.synth.to_mono`), a block of ``block_frames`` at a
    time, so a long stereo recording never sits in memory as a whole stereo array; the result is the
    same array as ``to_mono(soundfile.read(uri, dtype="float32", always_2d=True)[0])``.

    Raises
    ------
    AudioError
        ``audio_unreadable`` when the file is missing, truncated or not a sound file soundfile decodes;
        ``audio_empty`` for a file without frames; ``audio_invalid`` for NaN or infinite samples.
    """
    import soundfile as sf

    from tasks.kernels.synth import to_mono

    fh = None
    try:
        fh, target = _open(uri, storage_options)
        with sf.SoundFile(target) as f:
            sr, frames = int(f.samplerate), int(f.frames)
            out = np.empty(frames, np.float32)
            done = 0
            while done < frames:
                block = f.read(min(block_frames, frames - done), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    raise AudioError("audio_unreadable", f"the file ends after {done} of its {frames} frames")
                out[done:done + block.shape[0]] = to_mono(block)
                done += block.shape[0]
    except AudioError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError) as e:  # sf.LibsndfileError is a RuntimeError
        raise AudioError("audio_unreadable", f"could not read the sound file: {e}") from e
    finally:
        if fh is not None:
            fh.close()
    if frames == 0:
        raise AudioError("audio_empty", "the sound file holds no samples")
    if not np.isfinite(out).all():
        raise AudioError("audio_invalid", "the sound file holds NaN or infinite samples")
    return out, sr


def read_recording(uri: str, sample_rate: int, storage_options: dict | None = None) -> np.ndarray:
    """A recording as mono float32 at ``sample_rate`` (:func:`read_audio`, then :func:`resample`)."""
    audio, sr = read_audio(uri, storage_options)
    return resample(audio, sr, sample_rate)

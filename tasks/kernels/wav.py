"""WAV bytes of audio: the one WAV writer (decoded Hilbert images, generated samples).

No files here: callers put the bytes in the store or write them with
:func:`tasks.storage.files.atomic_write`; sound files are read by :mod:`tasks.storage.recordings`.
"""

from __future__ import annotations

import io

import numpy as np


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of ``audio``.

    Parameters
    ----------
    audio
        Mono ``(frames,)`` or ``(frames, channels)`` (soundfile's layout), float; clipped to [-1, 1].
    sample_rate
        Frames per second.
    """
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), int(sample_rate),
             format="WAV", subtype="PCM_16")
    return buf.getvalue()

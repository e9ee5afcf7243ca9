"""An independent reader built on mido, implementing the rules stated in ``tasks/kernels/midi.py``.

It shares no code with the numba reader: mido parses the bytes, and plain Python pairs the notes and
walks the tempo map message by message (mido's own ``tick2second`` per segment).
"""

from __future__ import annotations

import io
from collections import defaultdict, deque

import mido


def read_with_mido(data: bytes) -> dict:
    mf = mido.MidiFile(file=io.BytesIO(data))
    tpb = mf.ticks_per_beat
    # absolute ticks per track
    tempo_events = []  # (tick, track, index, tempo)
    per_track = []
    end_ticks = []
    for ti, track in enumerate(mf.tracks):
        tick = 0
        msgs = []
        for k, msg in enumerate(track):
            tick += msg.time
            msgs.append((tick, msg))
            if msg.type == "set_tempo":
                tempo_events.append((tick, ti, k, msg.tempo))
            if msg.type == "end_of_track":
                break
        per_track.append(msgs)
        end_ticks.append(tick)
    tempo_events.sort(key=lambda e: (e[0], e[1], e[2]))
    # segments: (start_tick, start_seconds, tempo)
    segs = [(0, 0.0, 500000)]
    for tick, _, _, tempo in tempo_events:
        t0, s0, tp = segs[-1]
        if tick == t0:
            segs[-1] = (t0, s0, tempo)
        else:
            segs.append((tick, s0 + mido.tick2second(tick - t0, tpb, tp), tempo))

    def seconds(tick: int) -> float:
        seg = segs[0]
        for s in segs:
            if s[0] <= tick:
                seg = s
            else:
                break
        return seg[1] + mido.tick2second(tick - seg[0], tpb, seg[2])

    notes = []
    controls = []
    for ti, msgs in enumerate(per_track):
        open_notes: dict[tuple[int, int], deque] = defaultdict(deque)
        program = [0] * 16
        for tick, msg in msgs:
            if msg.type == "program_change":
                program[msg.channel] = msg.program
            elif msg.type == "control_change":
                controls.append((tick, ti, msg.channel, msg.control, msg.value))
            elif msg.type == "note_on" and msg.velocity > 0:
                note = {"track": ti, "channel": msg.channel, "program": program[msg.channel], "pitch": msg.note,
                        "velocity": msg.velocity, "onset_tick": tick, "offset_tick": None}
                open_notes[(msg.channel, msg.note)].append(note)
                notes.append(note)
            elif msg.type in ("note_off", "note_on"):
                q = open_notes.get((msg.channel, msg.note))
                if q:
                    q.popleft()["offset_tick"] = tick
        for note in notes:
            if note["track"] == ti and note["offset_tick"] is None:
                note["offset_tick"] = end_ticks[ti]
    controls.sort(key=lambda c: (c[0], c[1]))
    notes.sort(key=lambda n: (n["onset_tick"], n["pitch"], n["track"]))
    for n in notes:
        n["onset_s"] = seconds(n["onset_tick"])
        n["offset_s"] = seconds(n["offset_tick"])
    return {"ticks_per_beat": tpb, "notes": notes, "controls": controls, "tempos": tempo_events,
            "duration_s": mf.length, "end_tick": max(end_ticks), "seconds": seconds}

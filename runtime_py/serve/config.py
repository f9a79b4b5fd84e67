"""Server settings: one frozen dataclass shared by `toolformer serve`, `python -m runtime_py.serve` and the workers."""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV_CONFIG = "TOOLFORMER_SERVE_CONFIG"  # JSON ServeConfig handed to `--workers` processes
ENV_API_KEY = "TOOLFORMER_API_KEY"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DELAY_POLICIES = ("adaptive", "always")  # see runtime_py/serve/batching.py


class ConfigError(ValueError):
    """A server setting is invalid (exit 2 with one line)."""


@dataclass(frozen=True)
class ServeConfig:
    bundles: tuple = ()                  # ((name, bundle dir), ...) served side by side
    artifact: str | None = None          # artifact key or file in every bundle (default: the manifest's default)
    host: str = "127.0.0.1"              # loopback unless asked: a model endpoint is not public by accident
    port: int = 8080
    workers: int = 1                     # uvicorn processes, each with its own copy of the models
    threads: int | None = None           # intra-op threads per model run (default: the runtime's own choice)
    api_key_file: str | None = None      # one key per line; TOOLFORMER_API_KEY adds one more
    allow_no_key: bool = False           # serve without keys on a non-loopback host (explicit opt-in)
    max_batch_size: int = 32             # texts per model run (Triton's name); 1 = batching off
    max_queue_delay_us: int = 2000       # how long the oldest queued request waits for company (Triton's name)
    queue_delay_policy: str = "adaptive"  # adaptive: no wait after a run of one request with nothing queued; always
    max_queue_size: int = 256            # queued requests per model; beyond that 503 + Retry-After
    request_timeout_s: float = 30.0      # from arrival to answer; past it 504
    max_body_bytes: int = 4 << 20        # request body limit (413)
    max_texts: int = 256                 # texts per request (413)
    max_text_chars: int = 20000          # characters per text (413); tokens past the bundle's max length are cut
    log_inputs: bool = False             # put (masked) input texts into the request log
    graceful_timeout_s: float = 30.0     # SIGTERM: how long in-flight requests may take to finish

    def __post_init__(self):
        if not self.bundles:
            raise ConfigError("no bundle to serve")
        names = [n for n, _ in self.bundles]
        for n in names:
            if not NAME_RE.match(n):
                raise ConfigError(f"model name {n!r}: use letters, digits, '_', '.', '-' (at most 64)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"model name {dup[0]!r} is given twice; name each bundle with --bundle NAME=DIR")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: not a TCP port")
        positive = {"workers": self.workers, "max_batch_size": self.max_batch_size, "max_queue_size": self.max_queue_size,
                    "max_body_bytes": self.max_body_bytes, "max_texts": self.max_texts, "max_text_chars": self.max_text_chars}
        for key, val in positive.items():
            if val < 1:
                raise ConfigError(f"{key.replace('_', '-')} must be at least 1, got {val}")
        if self.queue_delay_policy not in DELAY_POLICIES:
            raise ConfigError(f"queue-delay-policy must be one of {', '.join(DELAY_POLICIES)}, got {self.queue_delay_policy!r}")
        if self.max_queue_delay_us < 0 or self.request_timeout_s <= 0 or self.graceful_timeout_s < 0:
            raise ConfigError("max-queue-delay-us must be >= 0 and the timeouts > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        d = json.loads(text)
        d["bundles"] = tuple(tuple(b) for b in d["bundles"])
        return cls(**d)


def default_name(bundle: str | Path) -> str:
    """Model name from a bundle path: runs/reviews/bundle → 'reviews', models/reviews → 'reviews'."""
    p = Path(bundle).resolve()
    name = p.parent.name if p.name == "bundle" else p.name.split(".tar")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("._-")[:64]
    return name or "model"


def parse_bundles(bundle: str | None, name: str | None, named: tuple | list = ()) -> tuple:
    """The positional BUNDLE (named by --name or its path) plus each `--bundle NAME=DIR`."""
    out = []
    if bundle:
        out.append((name or default_name(bundle), str(bundle)))
    elif name:
        raise ConfigError("--name names the positional BUNDLE; with --bundle use NAME=DIR")
    for item in named:
        n, sep, d = item.partition("=")
        if not sep or not n or not d:
            raise ConfigError(f"--bundle {item!r}: expected NAME=DIR")
        out.append((n, d))
    return tuple(out)


def read_api_keys(api_key_file: str | None) -> list[str]:
    """Keys from TOOLFORMER_API_KEY and the key file (one per line; blank lines and '#' comments skipped)."""
    keys = []
    env = os.environ.get(ENV_API_KEY, "").strip()
    if env:
        keys.append(env)
    if api_key_file:
        try:
            text = Path(api_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--api-key-file {api_key_file}: cannot read it ({e.strerror if isinstance(e, OSError) else e})") from None
        file_keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not file_keys:
            raise ConfigError(f"--api-key-file {api_key_file}: holds no key")
        keys += file_keys
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError("an API key is shorter than 16 characters; use a long random one (e.g. `openssl rand -hex 32`)")
    return keys

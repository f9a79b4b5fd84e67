"""Start the server: verify and load every bundle, then run uvicorn (one process, or `--workers N`)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile

from .config import ENV_CONFIG, LOOPBACK, ConfigError, ServeConfig, read_api_keys

log = logging.getLogger("toolformer.serve")


def setup_logging() -> None:
    """JSON lines on stderr, one per request and per lifecycle event; uvicorn's own lines at warning and above."""
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def load_models(cfg: ServeConfig) -> dict:
    """{name: runtime_py.Model}; every file's sha256 is checked against its manifest first (BundleError if not)."""
    import runtime_py

    models = {}
    for name, path in cfg.bundles:
        try:
            models[name] = runtime_py.load(path, artifact=cfg.artifact, threads=cfg.threads, check=True)
        except runtime_py.BundleError as e:
            raise runtime_py.BundleError(f"refusing to serve {name!r}: {e}") from None
        except (RuntimeError, ValueError, OSError) as e:
            raise runtime_py.BundleError(f"refusing to serve {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return models


def check_exposure(cfg: ServeConfig, keys: list[str]) -> None:
    if cfg.host not in LOOPBACK and not keys and not cfg.allow_no_key:
        raise ConfigError(f"--host {cfg.host} exposes the models beyond this machine without an API key: set "
                          "TOOLFORMER_API_KEY or --api-key-file (or pass --allow-no-key on a network you trust)")


def app_from_env():
    """App factory for `--workers` processes: the settings come in TOOLFORMER_SERVE_CONFIG."""
    setup_logging()
    cfg = ServeConfig.from_json(os.environ[ENV_CONFIG])
    from .app import create_app

    return create_app(load_models(cfg), cfg, read_api_keys(cfg.api_key_file))


def serve(cfg: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT; in-flight requests finish, new connections are refused, then exit 0."""
    import uvicorn

    setup_logging()
    keys = read_api_keys(cfg.api_key_file)
    check_exposure(cfg, keys)
    models = load_models(cfg)  # verified here once, so a tampered bundle stops the start with one line
    # uvicorn re-raises the signal that stopped it after a graceful shutdown; with a handler of ours in place
    # that re-raise is a no-op and the process exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    common = dict(host=cfg.host, port=cfg.port, access_log=False, log_level="warning",
                  timeout_graceful_shutdown=cfg.graceful_timeout_s, lifespan="on")
    if cfg.workers == 1:
        from .app import create_app

        uvicorn.run(create_app(models, cfg, keys), **common)
        return 0
    del models  # each worker loads (and checks) its own copy
    os.environ[ENV_CONFIG] = cfg.to_json()
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="toolformer-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    log.info(json.dumps({"event": "workers", "workers": cfg.workers, "metrics_dir": os.environ["PROMETHEUS_MULTIPROC_DIR"]}))
    try:
        uvicorn.run("runtime_py.serve.server:app_from_env", factory=True, workers=cfg.workers, **common)
    finally:
        if own_dir:
            import shutil

            shutil.rmtree(own_dir, ignore_errors=True)
    return 0

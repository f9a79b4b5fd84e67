"""HTTP serving of bundles on runtime_py: Open Inference Protocol (KServe V2) REST, dynamic batching, API keys, metrics.

    python -m runtime_py.serve BUNDLE --port 8080      # or: toolformer serve BUNDLE ...

Needs fastapi, uvicorn and prometheus-client besides runtime_py's own dependencies; never the toolchain,
and never torch for an ONNX artifact.
"""
from .config import ConfigError, ServeConfig, parse_bundles, read_api_keys

__all__ = ["ServeConfig", "ConfigError", "parse_bundles", "read_api_keys", "create_app", "serve"]


def create_app(models, cfg, keys):
    """The FastAPI app for {name: runtime_py.Model} (imported on use: fastapi is not needed to read a config)."""
    from .app import create_app as _create

    return _create(models, cfg, keys)


def serve(cfg):
    """Verify, load and serve the bundles of `cfg` until SIGTERM; returns the exit code."""
    from .server import serve as _serve

    return _serve(cfg)

"""`python -m runtime_py.serve BUNDLE [...]`: the server without the toolchain (what a torch-free image runs)."""
from __future__ import annotations

import argparse
import sys

from .config import DELAY_POLICIES, ConfigError, ServeConfig, parse_bundles

HELP_EPILOG = "API keys: TOOLFORMER_API_KEY and/or --api-key-file (one key per line). Same options as `toolformer serve`."


def build_parser() -> argparse.ArgumentParser:
    d = ServeConfig.__dataclass_fields__
    ap = argparse.ArgumentParser(prog="python -m runtime_py.serve", description=__doc__, epilog=HELP_EPILOG)
    ap.add_argument("bundle", nargs="?", help="bundle directory (or .tar.zst/.tar.gz archive)")
    ap.add_argument("--bundle", dest="named", action="append", default=[], metavar="NAME=DIR", help="another bundle (repeatable)")
    ap.add_argument("--name", help="model name of BUNDLE (default: its directory's name)")
    ap.add_argument("--artifact", help="artifact key or file, e.g. onnx-int8 (default: the manifest's default)")
    ap.add_argument("--host", default=d["host"].default)
    ap.add_argument("--port", type=int, default=d["port"].default)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--api-key-file")
    ap.add_argument("--allow-no-key", action="store_true")
    for opt in ("max_batch_size", "max_queue_delay_us", "max_queue_size", "max_body_bytes", "max_texts", "max_text_chars"):
        ap.add_argument("--" + opt.replace("_", "-"), dest=opt, type=int, default=d[opt].default)
    ap.add_argument("--queue-delay-policy", choices=DELAY_POLICIES, default=d["queue_delay_policy"].default)
    ap.add_argument("--request-timeout-s", type=float, default=d["request_timeout_s"].default)
    ap.add_argument("--graceful-timeout-s", type=float, default=d["graceful_timeout_s"].default)
    ap.add_argument("--log-inputs", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from runtime_py.bundle import BundleError

    try:
        cfg = ServeConfig(bundles=parse_bundles(args.bundle, args.name, args.named), artifact=args.artifact, host=args.host,
                          port=args.port, workers=args.workers, threads=args.threads, api_key_file=args.api_key_file,
                          allow_no_key=args.allow_no_key, max_batch_size=args.max_batch_size,
                          max_queue_delay_us=args.max_queue_delay_us, queue_delay_policy=args.queue_delay_policy,
                          max_queue_size=args.max_queue_size,
                          request_timeout_s=args.request_timeout_s, max_body_bytes=args.max_body_bytes,
                          max_texts=args.max_texts, max_text_chars=args.max_text_chars, log_inputs=args.log_inputs,
                          graceful_timeout_s=args.graceful_timeout_s)
        from .server import serve

        return serve(cfg)
    except (ConfigError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

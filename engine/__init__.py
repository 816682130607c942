"""sigmatch: a signalling-triggered precision-marketing engine.

    from engine import Engine
    engine = Engine.from_config("campaigns.toml")
    run = engine.replay("trace.msgpack", out="out/")
"""
from engine.errors import CheckpointError, ConfigError, LoadError, SigmatchError, StreamError

__all__ = ["Engine", "Run", "SigmatchError", "ConfigError", "LoadError", "StreamError", "CheckpointError"]


def __getattr__(name):
    # The API pulls in the compiled core; importing engine.language.config or engine.errors must not.
    if name in ("Engine", "Run"):
        from engine import api
        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")

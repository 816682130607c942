"""Peers of sigmatch on the same trace and rules (issue 3): the reference model and DuckDB.

    from bench.peers import run_peers
    rows = run_peers(directory, subscribers=100_000, events=1_000_000)

or `python -m bench.peers.run --subscribers N --events E` for a table.
"""
__all__ = ["run_peers", "format_table", "PeerMismatch"]


def __getattr__(name):
    # Lazy, so that `python -m bench.peers.run` does not import run.py twice.
    if name in __all__:
        from bench.peers import run
        return getattr(run, name)
    raise AttributeError(name)

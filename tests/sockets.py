"""A socket to give a command as its standard input, whose peer sends some bytes and then
resets the connection: what a stream over the network that breaks looks like to a reader."""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Iterator


@contextlib.contextmanager
def reset_after(data: bytes, pause_s: float = 1.0) -> Iterator[socket.socket]:
    """The reading end of a connection whose peer sends `data`, waits `pause_s` (for the
    reader to take it all) and resets the connection (SO_LINGER 0: an RST, not a FIN)."""
    server = socket.create_server(("127.0.0.1", 0))
    producer = socket.create_connection(server.getsockname())
    conn, _ = server.accept()

    def feed():
        producer.sendall(data)
        time.sleep(pause_s)
        producer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        producer.close()
    threading.Thread(target=feed, daemon=True).start()
    try:
        yield conn
    finally:
        conn.close()
        server.close()

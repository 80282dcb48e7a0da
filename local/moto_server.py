"""``python -m local.moto_server --port N``: the local moto server in a process of its own,
so its request handling runs beside the handlers instead of sharing their interpreter."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from moto.server import ThreadedMotoServer

from local.aws import detach_moto_invocations


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.moto_server")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    detach_moto_invocations()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=arguments.port, verbose=False)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()

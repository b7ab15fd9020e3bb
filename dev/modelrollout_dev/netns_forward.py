"""A TCP forwarder from an address inside a network namespace to one on the host.

The real node's pods and kube-proxy live in the cluster's network namespace
(podnetwork.py), and the API server listens on the host's loopback, which no
other namespace can reach. The listening socket is made inside the namespace
(a socket keeps the namespace it was created in), every upstream connection on
the host; bytes pass through untouched, so TLS is end to end.

Run as `python -m modelrollout_dev.netns_forward NETNS LISTEN_IP:PORT UPSTREAM_IP:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """The calling thread in `netns` for the block (`ip netns` keeps them under /run/netns)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def listen_inside(netns: str, host: str, port: int) -> socket.socket:
    with inside(netns):
        listener = socket.create_server((host, port), reuse_port=False)
    listener.setblocking(False)
    return listener


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(listener: socket.socket, upstream_host: str, upstream_port: int) -> None:
    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        for writer in (client_w, up_w):
            writer.close()

    server = await asyncio.start_server(forward, sock=listener)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netns")
    parser.add_argument("listen", type=_address)
    parser.add_argument("upstream", type=_address)
    arguments = parser.parse_args()
    listener = listen_inside(arguments.netns, *arguments.listen)
    asyncio.run(_serve(listener, *arguments.upstream))


if __name__ == "__main__":
    main()

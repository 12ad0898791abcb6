#!/usr/bin/env python3
"""A plain-to-TLS tunnel for the conformance run over wss:// (autobahn.sh).

kosoku has no TLS, so it speaks ws:// to this tunnel, which carries every
byte unchanged over TLS (ALPN http/1.1, the test certificate trusted) to the
relay's TLS listener: the relay under test runs its TLS path, frames and
all. Prints the address it listens on (127.0.0.1:PORT), then serves until
killed.

    tls_tunnel.py RELAY_HOST:PORT CA_FILE
"""

import asyncio
import ssl
import sys

READ_BYTES = 64 * 1024


async def pipe(reader, writer, half_close):
    """Copies until EOF, then half-closes (plain side) or closes (TLS side)."""
    try:
        while data := await reader.read(READ_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            if half_close and writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, ssl.SSLError, OSError, RuntimeError):
            pass


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    context = ssl.create_default_context(cafile=sys.argv[2])
    context.set_alpn_protocols(["http/1.1"])

    async def handle(client_reader, client_writer):
        try:
            relay_reader, relay_writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname="localhost"
            )
        except (ConnectionError, ssl.SSLError, OSError) as e:
            print(f"tunnel: cannot reach the relay: {e}", file=sys.stderr, flush=True)
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, relay_writer, False),
            pipe(relay_reader, client_writer, True),
        )
        client_writer.close()
        relay_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    listen_port = server.sockets[0].getsockname()[1]
    print(f"127.0.0.1:{listen_port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

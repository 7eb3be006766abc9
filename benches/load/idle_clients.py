"""Opens N keep-alive HTTP/1.1 connections to 127.0.0.1:PORT, sends one GET on each, reads its
response, prints 'ready <ok>' and holds them open until killed (memory-under-idle-connections
benchmark, driven by run.sh)."""
import asyncio
import sys

N, PORT = int(sys.argv[1]), int(sys.argv[2])


async def one(held):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", PORT)
        w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
        held.append(w)
        return head.startswith(b"HTTP/1.1 200")
    except (OSError, asyncio.IncompleteReadError):
        return False


async def main():
    held = []
    ok = 0
    for start in range(0, N, 500):  # in batches: the accept backlog is finite
        ok += sum(await asyncio.gather(*(one(held) for _ in range(min(500, N - start)))))
    print(f"ready {ok}", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())

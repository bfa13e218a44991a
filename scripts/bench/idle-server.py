"""A tiny HTTP/1.1 server for measuring idle VUs (scripts/bench/idle-vus.sh).

It answers every POST to /api/auth/login with a token and every other POST
with an accepted generation, keeps connections open, and answers
GET /stats with the number of requests served so far. It holds no state
per user, so 20,000 idle connections cost it little and it is never the
limit of the measurement.
Usage: python3 idle-server.py PORT
"""
import asyncio
import json
import sys

TOKEN = "x" * 180  # about the size of the mock's JWT
LOGIN = json.dumps({"id": "u1", "email": "test@example.com", "credits": 10, "token": TOKEN}).encode()
ACCEPTED = json.dumps({"accepted": True, "clientKey": "k", "reservationId": "r",
                       "sessionId": "s", "status": "queued"}).encode()
served = 0


def answer(status, body, cookie=b""):
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + cookie + b"\r\n" + body)


LOGIN_ANSWER = answer(b"200 OK", LOGIN, b"Set-Cookie: token=" + TOKEN.encode() + b"; Path=/; HttpOnly\r\n")
ACCEPTED_ANSWER = answer(b"202 Accepted", ACCEPTED)


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        global served
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if head.startswith(b"get /stats"):
                self.transport.write(answer(b"200 OK", str(served).encode()))
                continue
            served += 1
            self.transport.write(LOGIN_ANSWER if b"/api/auth/login" in head.split(b"\r\n", 1)[0] else ACCEPTED_ANSWER)


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))

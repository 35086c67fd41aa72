"""A small msgpack-rpc client for mistrald's Unix socket, used by the tests.

It needs nothing but the standard library and msgpack, which is the point:
any msgpack-rpc client in any language can talk to the daemon.

    c = Client("/run/mistrald/mistrald.sock")
    print(c.call("tokenize", {"text": "Hi"}))
    for kind, value in c.generate(prompt="Once upon a time", max_tokens=16):
        print(kind, value)      # ("chunk", {...}) ... then ("result", {...})
"""

import collections
import socket
import sys
import time

try:
    import msgpack
except ImportError:
    # A Python built apart from the system's (pyenv, a venv) does not see
    # Debian's python3-msgpack; its C extension suits the same minor version.
    sys.path.append("/usr/lib/python3/dist-packages")
    import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2


class RpcError(Exception):
    """An error response: code (e.g. "busy") and message from the daemon."""

    def __init__(self, code, message, msgid=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.msgid = msgid


class ProtocolError(Exception):
    """The daemon sent something that is not a well-formed msgpack-rpc message."""


def _check_message(msg):
    if not isinstance(msg, list) or not msg or msg[0] not in (RESPONSE, NOTIFICATION):
        raise ProtocolError("not a response or notification: %r" % (msg,))
    if msg[0] == RESPONSE and len(msg) != 4:
        raise ProtocolError("response is not a 4-element array: %r" % (msg,))
    if msg[0] == NOTIFICATION and (len(msg) != 3 or not isinstance(msg[1], str)):
        raise ProtocolError("malformed notification: %r" % (msg,))
    return msg


def raise_for_error(msg):
    """Returns the result of a response, or raises RpcError for an error response."""
    err = msg[2]
    if err is not None:
        if not isinstance(err, dict) or not isinstance(err.get("code"), str) \
                or not isinstance(err.get("message"), str):
            raise ProtocolError("malformed error object: %r" % (err,))
        raise RpcError(err["code"], err["message"], msg[1])
    return msg[3]


class Client:
    """One connection. Not thread-safe: use one Client per thread."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        # raw=False decodes every str strictly as UTF-8: invalid UTF-8 from
        # the daemon raises instead of slipping through.
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
        self.backlog = collections.deque()   # messages read while waiting for others
        self.next_id = 1
        self.eof = False
        self.bytes_in = 0

    # -- bytes ---------------------------------------------------------------

    def send_bytes(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, timeout):
        """Reads once from the socket into the unpacker; EOFError at end of stream."""
        if self.eof:
            raise EOFError("connection closed by the daemon")
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed by the daemon")
        self.bytes_in += len(data)
        self.unpacker.feed(data)

    def read_message(self, timeout=None):
        """The next message (a list), from the backlog first. Raises
        socket.timeout, EOFError, ProtocolError or UnicodeDecodeError."""
        if self.backlog:
            return self.backlog.popleft()
        return self._read_socket(timeout)

    def _read_socket(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                return _check_message(next(self.unpacker))
            except StopIteration:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no message within %.1f s" % timeout)
            self._fill(left)

    def _read_for(self, msgid, timeout=None):
        """The next message about msgid (its chunks or its response); others are kept."""
        for i, m in enumerate(self.backlog):
            if _about(m, msgid):
                del self.backlog[i]
                return m
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_socket(max(deadline - time.monotonic(), 0.001))
            if _about(m, msgid):
                return m
            self.backlog.append(m)

    def expect_close(self, timeout=5.0):
        """Reads until the daemon closes the connection; returns the messages
        read on the way. Raises socket.timeout if it stays open."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msgs.append(self._read_socket(max(deadline - time.monotonic(), 0.001)))
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return msgs

    # -- requests ------------------------------------------------------------

    def _msgid(self):
        msgid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return msgid

    def send_request(self, method, params=None, msgid=None):
        """Sends one request without waiting; returns its msgid. params: None
        (no parameters), a dict (sent as [dict]) or a list (sent as it is)."""
        if msgid is None:
            msgid = self._msgid()
        if params is None:
            params = []
        elif isinstance(params, dict):
            params = [params]
        self.send_bytes(msgpack.packb([REQUEST, msgid, method, params], use_bin_type=True))
        return msgid

    def wait_response(self, msgid, timeout=None, chunks=None):
        """Waits for the response to msgid; its notifications go to chunks
        (a list) when given, else are dropped. Returns the raw response."""
        while True:
            m = self._read_for(msgid, timeout)
            if m[0] == RESPONSE:
                return m
            if chunks is not None:
                chunks.append(m[2][1])

    def call(self, method, params=None, timeout=None):
        """One request and its result; raises RpcError on an error response."""
        msgid = self.send_request(method, params)
        return raise_for_error(self.wait_response(msgid, timeout))

    def generate(self, stream=True, method="generate", timeout=None, **params):
        """Yields ("chunk", {response, tokens, logprobs?}) for each chunk, then
        ("result", result). Raises RpcError on an error response."""
        params["stream"] = stream
        msgid = self.send_request(method, params)
        return self.iterate(msgid, timeout)

    def iterate(self, msgid, timeout=None):
        """The generate() iterator for a request already sent."""
        while True:
            m = self._read_for(msgid, timeout)
            if m[0] == RESPONSE:
                yield "result", raise_for_error(m)
                return
            if m[1] != "generate.chunk" or not isinstance(m[2], list) or len(m[2]) != 2 \
                    or not isinstance(m[2][1], dict):
                raise ProtocolError("unexpected notification: %r" % (m,))
            yield "chunk", m[2][1]

    def chat(self, messages, stream=True, **params):
        return self.generate(stream=stream, method="chat", messages=messages, **params)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _about(m, msgid):
    if m[0] == RESPONSE:
        return m[1] == msgid
    return isinstance(m[2], list) and len(m[2]) >= 1 and m[2][0] == msgid


def collect(it):
    """Runs a generate() iterator to its end: (chunks, result)."""
    chunks = []
    for kind, value in it:
        if kind == "chunk":
            chunks.append(value)
        else:
            return chunks, value
    raise ProtocolError("stream ended without a result")

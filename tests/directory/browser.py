#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A real browser for the directory tests: Debian's headless Chromium.

  browser.py dump URL            prints the DOM after load (chromium --dump-dom)
  browser.py upload URL FILE     opens URL (the status check form), puts FILE into the form's file
                                 input through the DevTools protocol (as a person choosing a file
                                 would), presses the form's button and prints the DOM of the
                                 answer page
  browser.py upload URL FILE PNG the same, and a screenshot (1200x900) of the answer page
  browser.py shot URL PNG        screenshot, 1200x900

The pages need no JavaScript; the DevTools protocol only stands in for the person's hands. The
WebSocket client is the few lines the protocol needs (Python's standard library has none)."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--lang=en-US"]


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("browser.py: chromium is not installed (scripts/setup.sh installs it)")


def run_simple(args):
    profile = tempfile.mkdtemp(prefix="pkiva-chromium-")
    try:
        out = subprocess.run([chromium()] + FLAGS + ["--user-data-dir=" + profile] + args,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
        return out.stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class WebSocket:
    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError("websocket handshake refused: %r" % head[:200])
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("websocket closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise RuntimeError("websocket closed by the browser")
            if opcode in (0, 1, 2):
                message += data
                if b0 & 0x80:
                    return json.loads(message.decode("utf-8"))


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="pkiva-chromium-")
        self.proc = subprocess.Popen([chromium()] + FLAGS + [
            "--user-data-dir=" + self.profile, "--remote-debugging-port=0",
            "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        time.sleep(0.1)
        with open(port_file) as f:
            port, path = f.read().split("\n")[:2]
        self.ws = WebSocket(int(port), path)
        self.next_id = 0
        self.session = None
        self.events = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")

    def call(self, method, params=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = self.ws.recv()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"]))
                return reply.get("result", {})
            self.events.append(reply)

    def wait_load(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            event = self.events.pop(0) if self.events else self.ws.recv()
            if event.get("method") == "Page.loadEventFired":
                return
        raise RuntimeError("page did not load")

    def dom(self):
        return self.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                              "returnByValue": True})["result"]["value"]

    def close(self):
        try:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def upload(url, path, png=None):
    b = Browser()
    try:
        b.call("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900,
                                                      "deviceScaleFactor": 1, "mobile": False})
        b.events.clear()
        b.call("Page.navigate", {"url": url})
        b.wait_load()
        root = b.call("DOM.getDocument")["root"]["nodeId"]
        node = b.call("DOM.querySelector", {"nodeId": root, "selector": "input[type=file]"})
        if not node.get("nodeId"):
            raise RuntimeError("the page has no file input")
        b.call("DOM.setFileInputFiles", {"nodeId": node["nodeId"],
                                         "files": [os.path.abspath(path)]})
        b.events.clear()
        # The person presses the form's button (its accessible name is the visible label).
        b.call("Runtime.evaluate", {"expression":
                                    "document.querySelector('form button[type=submit]').click()"})
        b.wait_load()
        if png:
            shot = b.call("Page.captureScreenshot", {"format": "png"})["data"]
            with open(png, "wb") as f:
                f.write(base64.b64decode(shot))
        return b.dom()
    finally:
        b.close()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        sys.stdout.write(run_simple(["--dump-dom", sys.argv[2]]))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "upload":
        sys.stdout.write(upload(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5
                                else None))
    elif len(sys.argv) == 4 and sys.argv[1] == "shot":
        run_simple(["--screenshot=" + os.path.abspath(sys.argv[3]), "--window-size=1200,900",
                    "--hide-scrollbars", sys.argv[2]])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

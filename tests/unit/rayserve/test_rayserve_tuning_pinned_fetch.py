"""A dataset download connects to the address that was checked, never to a second answer of DNS.

Why (issue 11, item 5): the trainer checked every address a name resolved to, then let httpx
resolve the name again to connect; a name that answers a public address first and a private one
second (DNS rebinding) reached the private one. Here the resolver does just that, and the only
server listens on the first answer. ``127.0.0.1`` plays the public address (the test's address
check admits it and applies the real rules to everything else, so ``127.0.0.2`` is refused).
Over https the name must still be what TLS verifies: the server's certificate is for the name,
and its SNI callback records what the client asked for.
"""

from __future__ import annotations

import functools
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.webhook.certs import generate_serving_certs
from rayserve.tuning import netguard
from rayserve.tuning.data import DownloadRefused, fetch, read_conversations

NAME = "data.example.test"
CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _public_is_127_0_0_1(ip: netguard.IPAddress) -> str | None:
    return None if str(ip) == "127.0.0.1" else netguard.address_problem(ip)


class RebindingResolver:
    """A public address to the first question, a private one to every later one."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return ["127.0.0.1"] if len(self.asked) == 1 else ["127.0.0.2"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    hosts: list[str]

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict]:
    """A server on 127.0.0.1 only; ``request.param`` "https" wraps it in TLS for NAME."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "d.jsonl").write_text(json.dumps({"messages": CONV}) + "\n")
    hosts: list[str] = []
    handler = functools.partial(type("H", (_Handler,), {"hosts": hosts}), directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    info: dict = {"port": httpd.server_address[1], "hosts": hosts, "sni": [], "scheme": request.param,
                  "verify": True}
    if request.param == "https":
        certs = generate_serving_certs([NAME])
        cert, key = certs.write(tmp_path / "tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = lambda sock, name, _ctx: info["sni"].append(name)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        info["verify"] = ssl.create_default_context(cadata=certs.ca_pem.decode())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield info
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("server", ["http", "https"], indirect=True)
def test_the_fetch_connects_to_the_vetted_address_with_the_name_in_host_and_sni(server: dict,
                                                                                tmp_path: Path) -> None:
    resolver = RebindingResolver()
    url = f"{server['scheme']}://{NAME}:{server['port']}/d.jsonl"
    path = fetch(url, workdir=str(tmp_path), resolve=resolver, address_check=_public_is_127_0_0_1,
                 verify=server["verify"])
    assert read_conversations(path) == [CONV]
    assert resolver.asked == [NAME]  # asked once: the connect did not resolve the name again
    assert server["hosts"] == [f"{NAME}:{server['port']}"]  # the name, not the address, in Host
    if server["scheme"] == "https":
        assert server["sni"] == [NAME]  # and in the TLS handshake, whose certificate is for NAME


@pytest.mark.parametrize("server", ["https"], indirect=True)
def test_tls_is_verified_against_the_name_not_the_address(server: dict) -> None:
    other = "elsewhere.example.test"  # the certificate is for NAME only
    with pytest.raises(httpx.ConnectError, match=r"certificate verify failed|Hostname mismatch"):
        fetch(f"https://{other}:{server['port']}/d.jsonl", resolve=lambda host: ["127.0.0.1"],
              address_check=_public_is_127_0_0_1, verify=server["verify"])


@pytest.mark.parametrize("server", ["http"], indirect=True)
def test_a_second_answer_that_is_private_is_refused_at_its_own_check(server: dict) -> None:
    """The rebinding resolver's second answer is what a redirect to the same name gets: refused."""
    resolver = RebindingResolver()
    resolver.asked.append("(already asked once)")
    with pytest.raises(DownloadRefused, match=r"data\.example\.test, which resolves to .*127\.0\.0\.2"):
        fetch(f"http://{NAME}:{server['port']}/d.jsonl", resolve=resolver, address_check=_public_is_127_0_0_1)
    assert not server["hosts"]  # nothing was sent

"""https:// origins: TLS verification and ALPN (h2, or fallback to HTTP/1.1)."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import httpx
import pytest

from resilient_stream import errors
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.transport import MultiplexedTransport

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (EC key: fast to make)."""
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(crt), str(key)


def trusting(crt: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=crt)


async def generate(client: httpx.AsyncClient, url: str) -> httpx.Response:
    body = {"model": "m", "prompt": "tls", "options": {"num_predict": 5}}
    response = await client.post(url + "/api/generate", json=body)
    assert response.status_code == 200
    assert response.content.count(b"\n") == 6
    return response


@pytest.mark.timeout(30)
async def test_https_negotiates_h2_by_alpn(cert: tuple[str, str]) -> None:
    crt, key = cert
    async with ReferenceServer(tls_cert=crt, tls_key=key, stop_probability=0.0) as srv:
        assert srv.url.startswith("https://")
        transport = MultiplexedTransport(ssl_context=trusting(crt))
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            responses = [await generate(client, srv.url) for _ in range(3)]
            assert {r.http_version for r in responses} == {"HTTP/2"}
            assert transport.stats().connections_opened == 1


@pytest.mark.timeout(30)
async def test_https_server_choosing_http1_by_alpn_falls_back(cert: tuple[str, str]) -> None:
    crt, key = cert
    async with ReferenceServer(tls_cert=crt, tls_key=key, http2=False, stop_probability=0.0) as srv:
        transport = MultiplexedTransport(ssl_context=trusting(crt))
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            for _ in range(2):
                assert (await generate(client, srv.url)).http_version == "HTTP/1.1"
            assert transport.stats().http1_origins == [srv.url]


@pytest.mark.timeout(30)
async def test_tls_verification_is_on_by_default(cert: tuple[str, str]) -> None:
    crt, key = cert
    async with ReferenceServer(tls_cert=crt, tls_key=key) as srv:
        transport = MultiplexedTransport()  # does not trust the self-signed certificate
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            with pytest.raises(errors.ConnectError) as info:
                await client.post(srv.url + "/api/generate", json={"model": "m", "prompt": "x"})
            assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
            assert transport.stats().streams_active == 0

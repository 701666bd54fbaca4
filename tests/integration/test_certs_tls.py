"""TLS through the running proxy: versions, refused client certificates, and certificate rotation
(in place and by a Kubernetes `..data` symlink swap) without failed requests or lost sessions.

Server certificates come from the dev CA (`portcullis certs`); refused client certificates
(expired, wrong usage, foreign CA) are made with `cryptography`, signed by the same dev CA key."""
import datetime
import http.client
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import BIN, CA, Proxy, RecordingUpstream, curl, paths_rule, raw_exchange, sidecar_config, tmpdir


def portcullis(*args):
    result = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"portcullis {' '.join(args)}: {result.stderr}"


class DevPki:
    """A dev CA, a server certificate for localhost, and an mTLS client `alice`."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_dir = os.path.join(directory, "ca")
        portcullis("certs", "init", "--dir", self.ca_dir)
        self.ca_path = os.path.join(self.ca_dir, "ca.crt")
        self.clients = os.path.join(directory, "clients")
        portcullis("certs", "issue", "--ca", self.ca_dir, "--out", self.clients, "--name", "alice", "--cn", "alice",
                   "--spiffe", "spiffe://cluster.local/ns/shop/sa/frontend", "--client")
        self.alice = (os.path.join(self.clients, "alice.crt"), os.path.join(self.clients, "alice.key"))

    def issue_server(self, out_dir, name="tls"):
        portcullis("certs", "issue", "--ca", self.ca_dir, "--out", out_dir, "--name", name, "--dns", "localhost",
                   "--ip", "127.0.0.1", "--server")
        return os.path.join(out_dir, f"{name}.crt"), os.path.join(out_dir, f"{name}.key")

    def forge_client(self, name, expired=False, ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,), lifetime=None, ca=False,
                     key_usage=None):
        """A client certificate signed by this CA that `certs issue` would refuse to make."""
        with open(os.path.join(self.ca_dir, "ca.key"), "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(self.ca_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        not_after = now - datetime.timedelta(days=1) if expired else now + (lifetime or datetime.timedelta(days=10))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        )
        if key_usage is not None:
            cert = cert.add_extension(key_usage, critical=True)
        cert = cert.sign(ca_key, hashes.SHA256())
        crt, keyp = os.path.join(self.clients, f"{name}.crt"), os.path.join(self.clients, f"{name}.key")
        with open(crt, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(keyp, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return crt, keyp


def config(pki, upstream, cert, key, min_version="1.2"):
    return sidecar_config(upstream, cert, key, pki.ca_path, paths_rule("everything", '["/**"]'),
                          bundle_extra=f', min_version: "{min_version}"')


@pytest.fixture
def env():
    d = tmpdir()
    pki = DevPki(d)
    up = RecordingUpstream()
    yield d, pki, up
    up.close()


def mtls(pki, client=None):
    crt, key = client or pki.alice
    return ["--cacert", pki.ca_path, "--cert", crt, "--key", key]


def client_context(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_path)
    ctx.load_cert_chain(*pki.alice)
    return ctx


def server_serial(pki, port):
    """The serial of the certificate a new connection is served with."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def file_serial(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


def s_client(pki, port, *args):
    """One request through `openssl s_client`; returns its output (stdout and stderr)."""
    request = b"GET /resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    crt, key = pki.alice
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                        "-CAfile", pki.ca_path, "-cert", crt, "-key", key, "-ign_eof", *args],
                       input=request, capture_output=True, timeout=30)
    return (p.stdout + p.stderr).decode(errors="replace")


def sent_chain(out):
    """The subjects of the certificates a server sent, from `openssl s_client -showcerts`."""
    return [line.split("s:", 1)[1].strip() for line in out.splitlines() if line.strip()[:1].isdigit() and " s:" in line]


def test_the_server_sends_the_intermediates_it_knows_and_never_the_root(env):
    """A peer trusts the root already or not at all, so the root is not sent (RFC 8446 4.4.2;
    nginx and HAProxy send what the certificate file holds): on the peer, every certificate sent
    is one more to parse per handshake. An intermediate the trust store holds is sent: without it
    the client could not build the path to its root."""
    d, pki, up = env
    crt, key = pki.issue_server(os.path.join(d, "direct"))
    p = Proxy(config(pki, up.address, crt, key), d)
    out = s_client(pki, p.port("inbound"), "-showcerts")
    assert "Verify return code: 0 (ok)" in out, out
    assert out.count("BEGIN CERTIFICATE") == 1, out
    assert len(sent_chain(out)) == 1, out
    p.stop()

    # A root that allows one intermediate (the dev CA allows none: pathlen 0), an intermediate
    # under it, and a server certificate the intermediate issued. The file holds the server
    # certificate alone; the trust store holds both roots (alice is the dev CA's) and the
    # intermediate.
    now = datetime.datetime.now(datetime.timezone.utc)

    def ca_cert(name, key, issuer_name, issuer_key, path_length):
        return (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis test root")])
    mid_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis test intermediate")])
    root = ca_cert(root_name, root_key, root_name, root_key, 1)
    mid = ca_cert(mid_name, mid_key, root_name, root_key, 0)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(mid_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(mid_key, hashes.SHA256())
    )
    srv = os.path.join(d, "via-intermediate")
    os.makedirs(srv)
    leaf_crt, leaf_keyp, store, root_crt = (os.path.join(srv, n) for n in ("tls.crt", "tls.key", "trust.crt", "root.crt"))
    pem = serialization.Encoding.PEM
    with open(leaf_crt, "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(leaf_keyp, "wb") as f:
        f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(leaf_keyp, 0o600)
    with open(pki.ca_path, "rb") as f:
        dev_root = f.read()
    with open(store, "wb") as f:
        f.write(dev_root + root.public_bytes(pem) + mid.public_bytes(pem))
    with open(root_crt, "wb") as f:
        f.write(root.public_bytes(pem))
    cfg = sidecar_config(up.address, leaf_crt, leaf_keyp, store, paths_rule("everything", '["/**"]'))
    p = Proxy(cfg, d)
    crt, key = pki.alice
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.port('inbound')}", "-servername", "localhost",
                          "-CAfile", root_crt, "-cert", crt, "-key", key, "-showcerts"],
                         input=b"", capture_output=True, timeout=30)
    out = (out.stdout + out.stderr).decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out  # the client had the root only: the path needs the intermediate
    assert out.count("BEGIN CERTIFICATE") == 2, out
    chain = sent_chain(out)
    assert "localhost" in chain[0] and "portcullis test intermediate" in chain[1], chain
    assert not any("portcullis test root" in c for c in chain), chain
    # The client (alice, issued by the root) is still accepted through this trust store.
    rc, body, err = curl("--cacert", root_crt, "--cert", crt, "--key", key, f"https://localhost:{p.port('inbound')}/x")
    assert rc == 0, err
    assert p.stop() == 0


def test_min_version_13_refuses_a_tls12_client_and_accepts_tls13(env):
    d, pki, up = env
    cert, key = pki.issue_server(os.path.join(d, "server"))
    p = Proxy(config(pki, up.address, cert, key, min_version="1.3"), d)
    url = f"https://localhost:{p.port('inbound')}/v"
    rc, out, err = curl(*mtls(pki), "--tlsv1.2", "--tls-max", "1.2", url)
    assert rc != 0, "a TLS 1.2-only client was served by a 1.3-only listener"
    rc, out, err = curl(*mtls(pki), "--tlsv1.3", "-w", "%{http_code}", "-o", "/dev/null", url)
    assert rc == 0, err
    assert out == b"200"
    assert up.paths() == ["/v"]
    p.stop()


def test_tls12_listener_negotiates_only_ecdhe_aead_suites(env):
    d, pki, up = env
    cert, key = pki.issue_server(os.path.join(d, "server"))
    p = Proxy(config(pki, up.address, cert, key), d)
    port = p.port("inbound")
    out = s_client(pki, port, "-tls1_2")
    assert "Cipher is ECDHE-ECDSA-AES" in out or "Cipher is ECDHE-ECDSA-CHACHA20" in out, out
    for weak in ("ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256"):  # CBC; static key exchange
        out = s_client(pki, port, "-tls1_2", "-cipher", weak)
        assert "Cipher is (NONE)" in out or "handshake failure" in out, out
    p.stop()


def test_plain_tcp_and_refused_client_certificates(env):
    d, pki, up = env
    cert, key = pki.issue_server(os.path.join(d, "server"))
    p = Proxy(config(pki, up.address, cert, key), d)
    port = p.port("inbound")
    url = f"https://localhost:{port}/x"

    assert b"HTTP/1.1" not in raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", tls=False)
    rc, _, _ = curl("--cacert", pki.ca_path, url)
    assert rc != 0, "no client certificate was accepted"
    other = CA(d, name="Other CA")
    rc, _, _ = curl(*mtls(pki, other.issue("alice-elsewhere", cn="alice")), url)
    assert rc != 0, "a certificate from another CA was accepted"
    rc, _, _ = curl(*mtls(pki, pki.forge_client("expired", expired=True)), url)
    assert rc != 0, "an expired certificate was accepted"
    rc, _, _ = curl(*mtls(pki, pki.forge_client("server-only", ekus=[ExtendedKeyUsageOID.SERVER_AUTH])), url)
    assert rc != 0, "a certificate without clientAuth was accepted"
    # A CA certificate is no client's, whatever its key usage allows (third red-team round).
    rc, _, _ = curl(*mtls(pki, pki.forge_client("ca-as-client", ca=True)), url)
    assert rc != 0, "a CA certificate (cA=TRUE) was accepted as a client's"
    signs = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    rc, _, _ = curl(*mtls(pki, pki.forge_client("cert-signer", key_usage=signs)), url)
    assert rc != 0, "a certificate with keyCertSign was accepted as a client's"
    assert up.requests == []

    rc, out, err = curl(*mtls(pki), "-w", "%{http_code}", "-o", "/dev/null", url)
    assert rc == 0 and out == b"200", err
    p.stop()


class KeepAliveClient:
    """Sends a request every few milliseconds on ONE kept-alive TLS connection, counting failures."""

    def __init__(self, pki, port):
        self.conn = http.client.HTTPSConnection("localhost", port, context=client_context(pki), timeout=10)
        self.sent = 0
        self.failures = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def request(self):
        try:
            self.conn.request("GET", f"/keepalive/{self.sent}")
            response = self.conn.getresponse()
            response.read()
            if response.status != 200:
                self.failures.append(f"status {response.status}")
        except Exception as error:  # any failure is what this test is about
            self.failures.append(repr(error))
        self.sent += 1

    def run(self):
        while not self.stopping.is_set():
            self.request()
            time.sleep(0.02)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        peer = self.conn.sock.getpeercert(binary_form=True) if self.conn.sock else None
        self.conn.close()
        return peer


def wait_for_serial(pki, port, serial, timeout=20):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = server_serial(pki, port)
        if seen == serial:
            return
        time.sleep(0.1)
    raise AssertionError(f"new connections still get serial {seen:x}, not the rotated {serial:x}")


def check_rotation(pki, p, rotate, cert_path):
    """Drives `rotate()` while a keep-alive client works and a pre-rotation session waits."""
    port = p.port("inbound")
    before = server_serial(pki, port)
    session = os.path.join(p.dir, f"session-{before:x}.pem")
    first = s_client(pki, port, "-sess_out", session)
    assert "200 OK" in first, first
    client = KeepAliveClient(pki, port)
    while client.sent < 5:
        time.sleep(0.02)

    rotate()
    wait_for_serial(pki, port, file_serial(cert_path))
    sent_at_rotation = client.sent
    while client.sent < sent_at_rotation + 5:  # the old connection keeps working after the swap
        time.sleep(0.02)
    old_peer = client.stop()
    assert client.failures == [], client.failures
    assert x509.load_der_x509_certificate(old_peer).serial_number == before  # same connection throughout

    resumed = s_client(pki, port, "-sess_in", session)
    assert "Reused, TLSv1.3" in resumed, resumed
    assert "200 OK" in resumed, resumed


def write_crl(pki, path, revoked=()):
    """A CRL signed by the dev CA, revoking the certificates at `revoked` (paths)."""
    with open(os.path.join(pki.ca_dir, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(pki.ca_path, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - datetime.timedelta(minutes=1)).next_update(now + datetime.timedelta(days=1)))
    for cert in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(file_serial(cert))
                                      .revocation_date(now - datetime.timedelta(minutes=1)).build())
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    os.rename(tmp, path)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_a_revoked_client_cannot_resume_a_session_from_before_the_revocation(env, version):
    """Red-team finding (session 13): the session id context named the CRL by its path, so a
    session from before a reload that revoked the client still resumed (for the tickets' 2 hours)."""
    d, pki, up = env
    cert, key = pki.issue_server(os.path.join(d, "server"))
    crl = os.path.join(d, "clients.crl")
    write_crl(pki, crl)
    p = Proxy(sidecar_config(up.address, cert, key, pki.ca_path, paths_rule("everything", '["/**"]'),
                             bundle_extra=f", crl: {crl}"), d)
    try:
        port = p.port("inbound")
        session = os.path.join(d, "session.pem")
        first = s_client(pki, port, version, "-sess_out", session)
        assert "200 OK" in first, first
        assert "Reused" in s_client(pki, port, version, "-sess_in", session)  # resumption works at all
        write_crl(pki, crl, revoked=[pki.alice[0]])
        deadline = time.time() + 20
        while "200 OK" in s_client(pki, port, version) and time.time() < deadline:  # until the reload
            time.sleep(0.1)
        assert "200 OK" not in s_client(pki, port, version), "the revocation was not picked up"
        resumed = s_client(pki, port, version, "-sess_in", session)
        assert "Reused" not in resumed and "200 OK" not in resumed, resumed
    finally:
        p.stop()


def test_a_session_resumed_after_its_certificate_expired_names_no_one(env):
    """A resumed session carries its first handshake's verification; once the certificate has
    expired (tickets live two hours) the connection is served as no identity: denied."""
    d, pki, up = env
    cert, key = pki.issue_server(os.path.join(d, "server"))
    short = pki.forge_client("shortlived", lifetime=datetime.timedelta(seconds=3))
    p = Proxy(config(pki, up.address, cert, key), d)
    try:
        port = p.port("inbound")
        session = os.path.join(d, "session.pem")
        request = b"GET /resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

        def once(*args):
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                                "-CAfile", pki.ca_path, "-cert", short[0], "-key", short[1], "-ign_eof", *args],
                               input=request, capture_output=True, timeout=30)
            return (r.stdout + r.stderr).decode(errors="replace")
        assert "200 OK" in once("-sess_out", session)
        time.sleep(4)
        resumed = once("-sess_in", session)
        assert "Reused" in resumed and "403 Forbidden" in resumed, resumed
    finally:
        p.stop()


def test_rotation_in_place_keeps_connections_and_sessions(env):
    d, pki, up = env
    server_dir = os.path.join(d, "server")
    cert, key = pki.issue_server(server_dir)
    p = Proxy(config(pki, up.address, cert, key), d)
    # `certs issue` replaces tls.key and tls.crt one after the other, each by an atomic rename.
    check_rotation(pki, p, lambda: pki.issue_server(server_dir), cert)
    p.stop()


def test_rotation_by_kubernetes_data_symlink_swap(env):
    d, pki, up = env
    volume = os.path.join(d, "secret-volume")
    pki.issue_server(os.path.join(volume, "..2026_01_01_v1"))
    os.symlink("..2026_01_01_v1", os.path.join(volume, "..data"))
    for name in ("tls.crt", "tls.key"):
        os.symlink(os.path.join("..data", name), os.path.join(volume, name))
    cert, key = os.path.join(volume, "tls.crt"), os.path.join(volume, "tls.key")
    p = Proxy(config(pki, up.address, cert, key), d)

    def kubelet_swap():
        pki.issue_server(os.path.join(volume, "..2026_01_02_v2"))
        os.symlink("..2026_01_02_v2", os.path.join(volume, "..data_tmp"))
        os.rename(os.path.join(volume, "..data_tmp"), os.path.join(volume, "..data"))

    check_rotation(pki, p, kubelet_swap, cert)
    p.stop()


def test_broken_rotation_keeps_serving_the_old_certificate(env):
    d, pki, up = env
    server_dir = os.path.join(d, "server")
    cert, key = pki.issue_server(server_dir)
    p = Proxy(config(pki, up.address, cert, key), d)
    port = p.port("inbound")
    before = server_serial(pki, port)
    other_cert, other_key = pki.issue_server(os.path.join(d, "other"))
    with open(other_key, "rb") as src, open(key, "wb") as dst:  # a key that does not match the cert
        dst.write(src.read())
    deadline = time.time() + 20
    while "does not match" not in p.stderr() and time.time() < deadline:
        time.sleep(0.1)
    assert "does not match" in p.stderr(), p.stderr()
    assert server_serial(pki, port) == before
    rc, out, err = curl(*mtls(pki), "-w", "%{http_code}", "-o", "/dev/null", f"https://localhost:{port}/still")
    assert rc == 0 and out == b"200", err
    p.stop()

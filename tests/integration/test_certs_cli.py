"""`portcullis certs init|issue|show`, checked with the openssl command line a user would reach for."""
import os
import stat
import subprocess

import pytest

BIN = os.environ.get("PORTCULLIS_BIN", "build/portcullis")


def portcullis(*args, ok=True):
    result = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
    if ok:
        assert result.returncode == 0, f"portcullis {' '.join(args)} failed: {result.stderr}"
    return result


def openssl(*args):
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    return result


def x509_text(path):
    result = openssl("x509", "-in", str(path), "-text", "-noout")
    assert result.returncode == 0, result.stderr
    return result.stdout


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture()
def ca(tmp_path):
    ca_dir = tmp_path / "ca"
    portcullis("certs", "init", "--dir", str(ca_dir))
    return ca_dir


def test_init_writes_a_ca_that_openssl_accepts(ca):
    assert mode(ca / "ca.key") == 0o600
    text = x509_text(ca / "ca.crt")
    assert "CA:TRUE" in text
    assert "X509v3 Basic Constraints: critical" in text
    assert "Certificate Sign, CRL Sign" in text
    assert "ASN1 OID: prime256v1" in text
    # The key is the CA certificate's key.
    key_pub = openssl("pkey", "-in", str(ca / "ca.key"), "-pubout").stdout
    cert_pub = openssl("x509", "-in", str(ca / "ca.crt"), "-pubkey", "-noout").stdout
    assert key_pub and key_pub == cert_pub


def test_init_refuses_to_replace_an_existing_ca(ca):
    before = (ca / "ca.crt").read_bytes()
    result = portcullis("certs", "init", "--dir", str(ca), ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith("portcullis: ")
    assert "already exists" in result.stderr
    assert (ca / "ca.crt").read_bytes() == before


def test_issued_sidecar_cert_verifies_and_carries_its_names(ca, tmp_path):
    out = tmp_path / "out"
    portcullis("certs", "issue", "--ca", str(ca), "--out", str(out), "--name", "frontend",
               "--spiffe", "spiffe://cluster.local/ns/shop/sa/frontend", "--cn", "frontend",
               "--org", "shop", "--org", "web", "--dns", "frontend.shop.svc", "--ip", "10.0.0.7",
               "--days", "30")
    assert mode(out / "frontend.key") == 0o600
    assert (out / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()
    for purpose in ("sslclient", "sslserver"):
        result = openssl("verify", "-purpose", purpose, "-CAfile", str(ca / "ca.crt"), str(out / "frontend.crt"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "frontend.crt: OK" in result.stdout
    text = x509_text(out / "frontend.crt")
    assert "URI:spiffe://cluster.local/ns/shop/sa/frontend" in text
    assert "DNS:frontend.shop.svc" in text
    assert "IP Address:10.0.0.7" in text
    assert "TLS Web Client Authentication, TLS Web Server Authentication" in text
    assert "CA:FALSE" in text
    assert "O = shop, O = web, CN = frontend" in text
    assert "X509v3 Authority Key Identifier" in text


def test_client_only_cert_is_refused_for_server_use(ca, tmp_path):
    out = tmp_path / "out"
    portcullis("certs", "issue", "--ca", str(ca), "--out", str(out), "--name", "alice", "--cn", "alice",
               "--org", "ops", "--client")
    text = x509_text(out / "alice.crt")
    assert "TLS Web Client Authentication" in text
    assert "TLS Web Server Authentication" not in text
    client = openssl("verify", "-purpose", "sslclient", "-CAfile", str(ca / "ca.crt"), str(out / "alice.crt"))
    assert client.returncode == 0
    server = openssl("verify", "-purpose", "sslserver", "-CAfile", str(ca / "ca.crt"), str(out / "alice.crt"))
    assert server.returncode != 0
    assert "unsuitable certificate purpose" in server.stdout + server.stderr


def test_server_only_cert(ca, tmp_path):
    out = tmp_path / "out"
    portcullis("certs", "issue", "--ca", str(ca), "--out", str(out), "--name", "api", "--dns", "api.local",
               "--server")
    text = x509_text(out / "api.crt")
    assert "TLS Web Server Authentication" in text
    assert "TLS Web Client Authentication" not in text


def test_docker_names_for_docker_cert_path(ca, tmp_path):
    out = tmp_path / "docker"
    portcullis("certs", "issue", "--ca", str(ca), "--out", str(out), "--name", "client", "--client", "--docker")
    assert (out / "cert.pem").read_bytes() == (out / "client.crt").read_bytes()
    assert (out / "key.pem").read_bytes() == (out / "client.key").read_bytes()
    assert (out / "ca.pem").read_bytes() == (ca / "ca.crt").read_bytes()
    assert mode(out / "key.pem") == 0o600
    result = openssl("verify", "-CAfile", str(out / "ca.pem"), str(out / "cert.pem"))
    assert result.returncode == 0


def test_cert_from_another_ca_does_not_verify(ca, tmp_path):
    other = tmp_path / "other-ca"
    portcullis("certs", "init", "--dir", str(other))
    portcullis("certs", "issue", "--ca", str(other), "--out", str(tmp_path / "out"), "--name", "mallory")
    result = openssl("verify", "-CAfile", str(ca / "ca.crt"), str(tmp_path / "out" / "mallory.crt"))
    assert result.returncode != 0


def test_show_prints_subject_sans_validity_and_fingerprint(ca, tmp_path):
    out = tmp_path / "out"
    portcullis("certs", "issue", "--ca", str(ca), "--out", str(out), "--name", "web",
               "--spiffe", "spiffe://example.org/web", "--dns", "web.example.org", "--days", "10")
    shown = portcullis("certs", "show", str(out / "web.crt")).stdout
    assert "CN=web" in shown
    assert "spiffe://example.org/web" in shown
    assert "web.example.org" in shown
    assert "not after:" in shown
    fingerprint = openssl("x509", "-in", str(out / "web.crt"), "-noout", "-fingerprint", "-sha256").stdout
    expected = fingerprint.strip().split("=", 1)[1].replace(":", "").lower()
    assert expected in shown


@pytest.mark.parametrize("args, message", [
    (["--ip", "300.1.1.1"], "invalid --ip '300.1.1.1'"),
    (["--spiffe", "spiffe://Example.org/x"], "invalid SPIFFE ID"),
    (["--spiffe", "spiffe://example.org/a/../b"], "invalid SPIFFE ID"),
    (["--dns", "bad..name"], "invalid --dns"),
    (["--days", "0"], "--days"),
    (["--client", "--server"], "excludes"),
])
def test_issue_rejects_bad_input_with_a_clear_message(ca, tmp_path, args, message):
    result = portcullis("certs", "issue", "--ca", str(ca), "--out", str(tmp_path / "out"), "--name", "x", *args,
                        ok=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "out" / "x.key").exists()


def test_issue_without_a_ca_explains_how_to_make_one(tmp_path):
    result = portcullis("certs", "issue", "--ca", str(tmp_path / "nope"), "--out", str(tmp_path / "out"),
                        "--name", "x", ok=False)
    assert result.returncode == 1
    assert "portcullis: CA directory" in result.stderr
    assert "certs init" in result.stderr


def test_show_of_a_missing_or_non_pem_file_fails(tmp_path):
    missing = portcullis("certs", "show", str(tmp_path / "missing.crt"), ok=False)
    assert missing.returncode == 1
    assert "missing.crt" in missing.stderr
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    result = portcullis("certs", "show", str(junk), ok=False)
    assert result.returncode == 1
    assert "no PEM certificate" in result.stderr

"""Nothing on the wire is taken on trust: host keys, the database's certificate, TLS suites,
the secret store's KEK, the admin password."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from tests.e2e.kit import RequestLoop, ServerNameAdapter, fab, main_pids, write_settings

pytestmark = pytest.mark.e2e


#: Successful SSH logins sshd has logged, except the one counting them (told apart by its
#: client port, which sshd logs as "Accepted publickey for U from A port P ssh2").
COUNT_LOGINS = (
    "own=$(echo $SSH_CONNECTION | cut -d' ' -f2); sudo journalctl -u ssh -o cat --no-pager"
    " | grep 'Accepted publickey' | grep -vc \" port $own ssh2\" || true"
)


def logins(host) -> int:
    """Successful SSH logins the host's sshd has logged so far, not counting this one."""
    return int(host.ssh(COUNT_LOGINS).stdout.strip())


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)
def test_host_keys_unknown_refused_recorded_on_request_changed_refused(
    deployed_clone, tmp_path, monkeypatch
):
    host = deployed_clone["host"]
    # The kit records keys in its own known_hosts (XDG state): this test's, empty.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    pins = ("known_hosts_file", "ssh_host_key")
    settings = {k: v for k, v in deployed_clone["settings"].items() if k not in pins}
    path = str(write_settings(tmp_path / "no-pin.yaml", settings))

    before = logins(host)
    unknown = fab("status", "--settings", path, check=False)
    assert unknown.returncode == 1
    assert "host key of" in unknown.stderr and "is unknown" in unknown.stderr
    assert "--accept-new-host-key" in unknown.stderr
    # Only the login that counted ``before``: the kit was refused before authenticating.
    assert logins(host) == before + 1

    assert " 0 changed" in fab("bootstrap", "--settings", path, "--accept-new-host-key").stdout
    assert fab("status", "--settings", path).returncode == 0  # recorded: no flag needed now

    keys = "/etc/ssh/ssh_host_ed25519_key"
    host.ssh(f"sudo cp -p {keys} {keys}.kept && sudo cp -p {keys}.pub {keys}.pub.kept")
    # One login: sshd reads its host keys for each new connection, so the next login
    # already meets the new key.
    host.ssh(
        f"sudo rm -f {keys} {keys}.pub && sudo ssh-keygen -q -t ed25519 -N '' -f {keys}"
        " && sudo systemctl restart ssh"
    )
    try:
        before = logins_trusting_any_key(host)
        changed = fab("bootstrap", "--settings", path, "--accept-new-host-key", check=False)
        assert changed.returncode == 1
        assert "host key of" in changed.stderr and "changed" in changed.stderr
        assert "ssh-keygen -R" in changed.stderr
        assert logins_trusting_any_key(host) == before + 1  # the count's own, not the kit's
    finally:
        # The test's own way back in, to the host's original key.
        trusting_any_key(
            host,
            f"sudo mv -f {keys}.kept {keys} && sudo mv -f {keys}.pub.kept {keys}.pub"
            " && sudo systemctl restart ssh",
        )


def trusting_any_key(host, command: str) -> subprocess.CompletedProcess:
    """SSH to the test's own host whatever key it shows (only to put its key back)."""
    argv = [a for a in host.ssh_argv()]
    argv[argv.index(f"UserKnownHostsFile={host.known_hosts}")] = "UserKnownHostsFile=/dev/null"
    argv[argv.index("StrictHostKeyChecking=yes")] = "StrictHostKeyChecking=no"
    return subprocess.run([*argv, command], capture_output=True, text=True, timeout=60, check=True)


def logins_trusting_any_key(host) -> int:
    return int(trusting_any_key(host, COUNT_LOGINS).stdout.strip())


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # the same on s3
def test_a_database_certificate_from_another_ca_is_refused_before_any_server_changes(
    deployed, tmp_path
):
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=Another CA", "-keyout", str(tmp_path / "k"),
         "-out", str(other_ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = dict(deployed["settings"], db_ca_cert_file=str(other_ca))
    path = str(write_settings(tmp_path / "other-ca.yaml", settings))
    before = main_pids(deployed["host"])
    result = fab("bootstrap", "--settings", path, check=False)
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert "database certificate" in message and "does not verify" in message
    assert "db_ca_cert_file" in message
    assert main_pids(deployed["host"]) == before
    # Back to the right CA (the servers never noticed).
    assert " changed" in fab("bootstrap", "--settings", str(deployed["path"])).stdout


#: Client offers, each willing at OpenSSL's lowest security level so that the server decides.
OFFERS = {
    "tls1.0": ["-tls1", "-cipher", "ALL@SECLEVEL=0"],
    "tls1.1": ["-tls1_1", "-cipher", "ALL@SECLEVEL=0"],
    "static-rsa-cbc": ["-tls1_2", "-cipher", "AES128-SHA@SECLEVEL=0"],
    "static-rsa-gcm": ["-tls1_2", "-cipher", "AES256-GCM-SHA384@SECLEVEL=0"],
    "ecdhe-cbc-sha1": ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA@SECLEVEL=0"],
    "ecdhe-cbc-sha384": ["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384@SECLEVEL=0"],
    "ecdhe-gcm": ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
    "ecdhe-chacha20": ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"],
    "tls1.3": ["-tls1_3"],
}
ACCEPTED = {"ecdhe-gcm", "ecdhe-chacha20", "tls1.3"}


def negotiates(address: str, port: int, offer: list[str]) -> bool:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{port}", *offer],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout


@pytest.fixture(scope="module")
def permissive_server(tmp_path_factory):
    """An OpenSSL test server on loopback that takes any protocol and suite: proof that each
    offer below can be negotiated at all, so a refusal is the kit's server's doing."""
    d = tmp_path_factory.mktemp("permissive")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-keyout", str(d / "k"), "-out", str(d / "c")],
        check=True, capture_output=True,
    )  # fmt: skip
    from tests.localcloud.procs import free_port

    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(d / "c"),
         "-key", str(d / "k"), "-cipher", "ALL@SECLEVEL=0", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        from tests.localcloud.procs import wait_for

        wait_for(
            lambda: negotiates("127.0.0.1", port, ["-tls1_3"]), what="openssl s_server", timeout=30
        )
        yield port
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)
@pytest.mark.parametrize("offer", sorted(OFFERS))
def test_only_modern_tls_is_offered(deployed, permissive_server, offer):
    assert negotiates("127.0.0.1", permissive_server, OFFERS[offer]), (
        f"the client cannot offer {offer}"
    )
    accepted = negotiates(deployed["host"].address, 443, OFFERS[offer])
    assert accepted is (offer in ACCEPTED), offer


def gateway(client_env, method: str, path: str, **kwargs):
    return requests.request(
        method,
        f"{client_env['url']}{path}",
        auth=(client_env["username"], client_env["password"]),
        verify=client_env["cert"],
        timeout=60,
        **kwargs,
    )


DECRYPT = (
    "import os, sys; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore; "
    "print(SqlAlchemyStore(os.environ['MLFLOW_BACKEND_STORE_URI'], '/tmp')"
    "._get_decrypted_secret(sys.argv[1]))"
)


def decrypt_on_host(host, secret_id: str) -> str:
    """What the server itself decrypts for a gateway secret, with its env file's KEK."""
    return host.ssh(
        "sudo systemd-run --quiet --wait --pipe --uid=mlflow --gid=mlflow "
        "--property=EnvironmentFile=/etc/mlflow/mlflow.env "
        f'/opt/mlflow/current/bin/python -c "{DECRYPT}" {secret_id}'
    ).stdout


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # the same on s3
def test_the_secret_store_has_its_own_kek_and_rotating_it_keeps_secrets(
    deployed_clone, clone_client_env
):
    deployed, client_env = deployed_clone, clone_client_env
    config = gateway(client_env, "GET", "/ajax-api/3.0/mlflow/gateway/secrets/config")
    assert config.status_code == 200 and config.json()["using_default_passphrase"] is False

    created = gateway(
        client_env,
        "POST",
        "/api/3.0/mlflow/gateway/secrets/create",
        json={"secret_name": f"e2e-{deployed['backend']}", "secret_value": {"api_key": "sk-e2e-1"},
              "provider": "openai"},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    secret_id = created.json()["secret"]["secret_id"]
    host = deployed["host"]
    kek_before = host.ssh("sudo cat /etc/mlflow/kek").stdout.strip()
    assert "sk-e2e-1" in decrypt_on_host(host, secret_id)

    rotated = fab("rotate-kek", "--settings", str(deployed["path"])).stdout
    assert "smoke ok" in rotated
    kek_after = host.ssh("sudo cat /etc/mlflow/kek").stdout.strip()
    assert kek_after.split()[0] == str(int(kek_before.split()[0]) + 1)
    assert kek_after != kek_before
    assert "sk-e2e-1" in decrypt_on_host(host, secret_id)  # stored before, readable after
    passphrase = kek_after.split()[1]
    for text in (
        rotated,
        host.ssh("ps -eo args").stdout,
        host.ssh("sudo journalctl --no-pager -o cat").stdout,
    ):
        assert passphrase not in text and kek_before.split()[1] not in text
    assert host.ssh("sudo stat -c '%a %U' /etc/mlflow/kek").stdout.split() == ["600", "mlflow"]
    assert " 0 changed" in fab("bootstrap", "--settings", str(deployed["path"])).stdout


def clear_auth_caches(host) -> None:
    """What MLflow's 60 s credential cache does by itself: forget verified passwords."""
    host.ssh("sudo systemctl restart 'mlflow-server@*'")
    host.ssh(
        "for i in $(seq 120); do curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health"
        " | grep -q 200 && exit 0; sleep 1; done; exit 1"
    )


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # the same on s3
def test_admin_password_drift_is_explained_and_rotation_converges(
    deployed_clone, clone_client_env, tmp_path
):
    """On a copy of the host and its database: the admin password changes for good."""
    host, settings = deployed_clone["host"], deployed_clone["settings"]
    client_env = clone_client_env
    original = settings["admin_password"]
    stored = tmp_path / "admin_password"
    stored.write_text(original + "\n")
    stored.chmod(0o600)
    by_file = str(
        write_settings(
            tmp_path / "by-file.yaml", {**settings, "admin_password": {"file": str(stored)}}
        )
    )
    api = f"{client_env['url']}/api/2.0/mlflow/users"

    def status_as(password: str) -> int:
        return requests.get(f"{api}/get", params={"username": "admin"}, auth=("admin", password),
                            verify=client_env["cert"], timeout=30).status_code  # fmt: skip

    def set_password(current: str, new: str) -> int:
        return requests.patch(f"{api}/update-password", auth=("admin", current), timeout=30,
                              verify=client_env["cert"], json={"username": "admin", "password": new,
                              "current_password": current}).status_code  # fmt: skip

    ui = "changed-in-the-ui-" + original[:8]
    new_file = tmp_path / "new"
    # Changed "in the UI": the kit's password is stale; bootstrap says so before any change.
    assert set_password(original, ui) == 200
    clear_auth_caches(host)
    before = main_pids(host)
    drift = fab("bootstrap", "--settings", by_file, check=False)
    assert drift.returncode == 1
    assert "no longer opens the server" in drift.stderr
    assert "rotate-admin-password" in drift.stderr
    assert main_pids(host) == before

    # Rotation from the UI's password to a new one, kept in the settings' password file.
    current = tmp_path / "current"
    current.write_text(ui)
    out = fab("rotate-admin-password", "--settings", by_file, "--new-password-file",
              str(new_file), "--current-password-file", str(current)).stdout  # fmt: skip
    new = new_file.read_text().strip()
    assert stored.read_text().strip() == new and "written to" in out and new not in out
    assert status_as(new) == 200 and status_as(ui) == 401 and status_as(original) == 401
    assert " 0 changed" in fab("bootstrap", "--settings", by_file).stdout


def served_chain(address: str, domain: str) -> list[str]:
    """The certificates nginx serves for ``domain`` (SNI) at ``address``, leaf first."""
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:443", "-servername", domain,
         "-showcerts"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip
    end = "-----END CERTIFICATE-----"
    begin = "-----BEGIN CERTIFICATE-----"
    return [begin + b.split(begin, 1)[1] + end + "\n" for b in shown.split(end) if begin in b]


def serial(pem: str) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)
def test_lets_encrypt_from_pebble_and_a_forced_renewal_served_losing_no_request(
    deployed_clone, local_cloud, tmp_path
):
    """tls_mode letsencrypt against Pebble (Let's Encrypt's test server): the certificate is
    issued on the host's first bootstrap in that mode through the HTTP-01 challenge on
    port 80; a forced renewal is served by nginx (the deploy hook reloads it) while a
    request loop, verifying against Pebble's root, loses nothing."""
    host = deployed_clone["host"]
    domain = f"tracking-{host.slot}.mlflow-kit.test"
    acme = local_cloud.deployment_settings(host, "s3", letsencrypt_domain=domain)
    keys = ("tls_mode", "domain", "acme_email", "acme_directory_url", "acme_ca_cert_file")
    settings = {**deployed_clone["settings"], **{k: acme[k] for k in keys}}
    path = str(write_settings(tmp_path / "letsencrypt.yaml", settings))

    issued = fab("bootstrap", "--settings", path).stdout
    assert "letsencrypt, issued by" in issued and "renewal timer enabled" in issued
    roots = tmp_path / "pebble-roots.pem"
    roots.write_text(local_cloud.acme_roots())
    leaf, *chain = served_chain(host.address, domain)
    (tmp_path / "leaf.pem").write_text(leaf)
    (tmp_path / "chain.pem").write_text("".join(chain))
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(roots), "-untrusted", str(tmp_path / "chain.pem"),
         "-purpose", "sslserver", "-verify_hostname", domain, str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert " 0 changed" in fab("bootstrap", "--settings", path).stdout

    # The API through the new certificate, as a client that knows only Pebble's root does.
    client_env = {
        "url": f"https://{host.address}",
        "cert": str(roots),
        "username": "admin",
        "password": settings["admin_password"],
    }
    session = requests.Session()
    session.mount("https://", ServerNameAdapter(domain))
    session.headers["Host"] = domain
    created = session.post(
        f"{client_env['url']}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"},
        auth=("admin", settings["admin_password"]), verify=str(roots), timeout=30,
    )  # fmt: skip
    assert created.status_code == 200, created.text
    run_id = created.json()["run"]["info"]["run_id"]

    before = serial(leaf)
    with RequestLoop(client_env, run_id, server_name=domain, max_requests=2000) as loop:
        while loop.sent < 20:
            time.sleep(0.2)
        renewed = host.ssh(
            f"sudo env REQUESTS_CA_BUNDLE=/etc/mlflow/acme-ca.pem certbot renew --force-renewal"
            f" --no-random-sleep-on-renew --cert-name {domain}",
            check=False, timeout=300,
        )  # fmt: skip
        assert renewed.returncode == 0, (renewed.stdout + renewed.stderr)[-2000:]
        deadline = time.monotonic() + 60
        while serial(served_chain(host.address, domain)[0]) == before:
            assert time.monotonic() < deadline, "nginx still serves the old certificate"
            time.sleep(1)
        sent_at_switch = loop.sent
        while loop.sent < sent_at_switch + 20:
            time.sleep(0.2)
    assert loop.failures == [], f"{len(loop.failures)} of {loop.sent} failed: {loop.failures[:5]}"
    print(f"renewal: {loop.sent} requests, none lost, {loop.resent} sent again")

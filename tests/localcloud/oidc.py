"""An OpenID Connect provider for the end-to-end tests: ``oidc-provider-mock``, made stricter.

``python -m tests.localcloud.oidc --bind ADDR --port N --cert PEM`` serves it over HTTPS
(a certificate from the local cloud's CA for the address itself, which the guest trusts
through the kit's ``extra_ca_certs`` setting); ``OidcProvider`` starts and stops it by
PID for ``LocalCloud``. The issuer is ``https://ADDR:N``; its discovery document, JWKS,
authorization, token, userinfo and end-session endpoints are the package's own
(``oidc_provider_mock``, MIT, on PyPI). Users and their claims (``email``, ``name``,
``groups``) are set through its ``PUT /users/<sub>`` endpoint; clients register through
its dynamic registration endpoint (``POST /oauth2/clients``), which answers with a
client ID and secret of its own choosing.

What this module adds, because a real provider does it and the package does not:

- clients must register (``require_client_registration``): an unknown client ID or a
  wrong client secret is refused at the token endpoint with ``invalid_client``;
- PKCE is required of every client, confidential ones too, and only ``S256``: an
  authorization request without ``code_challenge`` is refused, and a token request
  whose ``code_verifier`` does not match is refused with ``invalid_grant`` (the package
  registers no PKCE extension at all);
- the authorization request must carry a ``nonce``;
- the discovery document publishes ``claims_supported`` (the standard claims and those
  the users carry), as OpenID Connect Discovery recommends.

What a real provider does that this one still does not:

- authenticate the person: the authorization page is a form that takes any subject
  (``sub``) and signs it in, with no password, MFA, consent screen or session of the
  provider's own (every authorization posts the form again, so there is no single
  sign-on across clients and ``end_session`` has no provider session to end);
- registration is open to anyone who can reach it; a real provider registers clients
  through an administrator, often with a fixed redirect URI allow-list per client;
- access tokens are opaque strings (many providers issue JWT access tokens with an
  ``aud`` of the API); only the ID token is a JWT;
- the groups claim is a plain list in the ID token and userinfo whatever the scope;
  real providers add it through a ``groups`` scope or a mapper, may send group IDs
  instead of names, and Entra ID replaces a long list with an "overage" claim;
- one signing key per process, never rotated; everything (clients, users, tokens) is
  in memory and lost on restart;
- no token revocation or introspection endpoint, no client-credentials grant, no
  ``prompt``/``max_age`` handling, no rate limits.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.localcloud.pki import LocalCA
from tests.localcloud.procs import free_port, spawn, stop, wait_for

#: The claims a user may carry besides ``sub``; published as ``claims_supported``.
CLAIMS = ("email", "email_verified", "name", "preferred_username", "groups")
#: The people the tests sign in as: ``sub`` -> claims. carol's token has no groups claim.
USERS = {
    "alice": {"email": "alice@example.test", "name": "Alice", "groups": ["mlflow-users", "team-a"]},
    "bob": {"email": "bob@example.test", "name": "Bob", "groups": ["mlflow-users", "team-b"]},
    "mallory": {"email": "mallory@example.test", "name": "Mallory", "groups": ["contractors"]},
    "carol": {"email": "carol@example.test", "name": "Carol"},
    "ops": {"email": "ops@example.test", "name": "Ops", "groups": ["mlflow-admins"]},
}


# --------------------------------------------------------------------------- the server


def build_app():
    """The package's Flask app with registration, nonce and S256 PKCE required."""
    import flask
    import oidc_provider_mock
    from authlib.oauth2.rfc6749 import InvalidRequestError
    from authlib.oauth2.rfc7636 import CodeChallenge
    from oidc_provider_mock import _app

    challenges: dict[str, tuple[str, str]] = {}

    class StrictPkce(CodeChallenge):
        def validate_code_challenge(self, grant, redirect_uri):
            data = grant.request.payload.data
            if not data.get("code_challenge"):
                raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
            if data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("PKCE is required with code_challenge_method S256")
            super().validate_code_challenge(grant, redirect_uri)

        def get_authorization_code_challenge(self, authorization_code):
            return challenges.get(authorization_code.code, (None, None))[0]

        def get_authorization_code_challenge_method(self, authorization_code):
            return challenges.get(authorization_code.code, (None, None))[1]

    class PkceAuthorizationCodeGrant(_app.AuthorizationCodeGrant):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            StrictPkce(required=True)(self)

        def save_authorization_code(self, code, request):
            data = request.payload.data
            challenges[code] = (data.get("code_challenge"), data.get("code_challenge_method"))
            super().save_authorization_code(code, request)

        def delete_authorization_code(self, authorization_code):
            challenges.pop(authorization_code.code, None)
            super().delete_authorization_code(authorization_code)

    # The package registers the module's AuthorizationCodeGrant when the app is set up.
    _app.AuthorizationCodeGrant = PkceAuthorizationCodeGrant
    app = oidc_provider_mock.app(require_client_registration=True, require_nonce=True)

    @app.after_request
    def publish_claims(response):
        if flask.request.path == "/.well-known/openid-configuration" and response.is_json:
            document = response.get_json()
            document["claims_supported"] = ["sub", "iss", "aud", "exp", "iat", "nonce", *CLAIMS]
            document["code_challenge_methods_supported"] = ["S256"]
            response.set_data(json.dumps(document))
        return response

    return app


def main(argv: list[str]) -> int:
    import werkzeug.serving

    parser = argparse.ArgumentParser(prog="python -m tests.localcloud.oidc")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True, help="PEM: certificate, then key")
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    server = werkzeug.serving.make_server(
        args.bind, args.port, build_app(), threaded=True, ssl_context=context
    )
    print(f"OpenID provider on https://{args.bind}:{args.port}", flush=True)
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- the service


@dataclass
class OidcProvider:
    """The provider on the local cloud's address, stopped by PID."""

    address: str
    run_dir: Path
    tied: bool
    port: int = 0
    pid: int = 0

    @property
    def issuer(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def directory(self) -> Path:
        return self.run_dir / "oidc"

    @property
    def ca_cert(self) -> Path:
        """The CA that signed the provider's certificate (give it to the guest and to clients)."""
        return self.directory / "mlflow-kit-localcloud-oidc-ca.crt"

    def start(self, ca: LocalCA) -> None:
        """Start serving with a certificate for the address from the local cloud's ``ca``."""
        self.port = self.port or free_port(self.address)
        ca.copy_cert(self.ca_cert)
        pem = ca.issue(self.address, self.directory)
        proc = spawn(
            [sys.executable, "-m", "tests.localcloud.oidc", "--bind", self.address,
             "--port", str(self.port), "--cert", str(pem)],
            log=self.run_dir / "oidc.log",
            tied=self.tied,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.pid = proc.pid
        wait_for(lambda: self.discovery() is not None, what="OpenID provider", timeout=60)
        for sub, claims in USERS.items():
            self.set_user(sub, claims)

    def stop(self) -> None:
        if self.pid:
            stop(self.pid)
            self.pid = 0

    def _request(self, method: str, path: str, **kwargs):
        import requests

        # verify per request: a session's own would lose to REQUESTS_CA_BUNDLE.
        return requests.request(
            method, f"{self.issuer}{path}", verify=str(self.ca_cert), timeout=10, **kwargs
        )

    def discovery(self) -> dict | None:
        response = self._request("GET", "/.well-known/openid-configuration")
        return response.json() if response.status_code == 200 else None

    def set_user(self, sub: str, claims: dict) -> None:
        self._request("PUT", f"/users/{sub}", json=claims).raise_for_status()

    def register_client(self, redirect_uris: list[str]) -> tuple[str, str]:
        """A confidential client for these redirect URIs: (client ID, client secret)."""
        body = {"redirect_uris": redirect_uris, "token_endpoint_auth_method": "client_secret_basic"}
        response = self._request("POST", "/oauth2/clients", json=body)
        response.raise_for_status()
        answer = response.json()
        return answer["client_id"], answer["client_secret"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

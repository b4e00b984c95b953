"""``python -m tests.localcloud.https_files --bind ADDR --port N --root DIR --certs DIR``.

Serves ``DIR/<host name>/<path>`` over HTTPS for any host name the guest maps to
this address, with ``<certs>/<host name>.pem`` (chosen by SNI). GET and HEAD only.
See ``vendor.py`` for what this stands in for.
"""

from __future__ import annotations

import argparse
import functools
import ssl
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class VendorHandler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        root = Path(self.directory)
        site = (root / host).resolve()
        if not host or root.resolve() not in site.parents:
            return str(root / ".no-such-site")
        return str(site / Path(super().translate_path(path)).relative_to(Path(self.directory)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcloud.https_files")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--default-name", required=True)
    args = parser.parse_args(argv)

    def context_for(name: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certs / f"{name}.pem")
        return context

    def by_name(sock: ssl.SSLSocket, name: str | None, _context) -> None:
        if name and (args.certs / f"{name}.pem").exists():
            sock.context = context_for(name)

    default = context_for(args.default_name)
    default.sni_callback = by_name
    handler = functools.partial(VendorHandler, directory=str(args.root))
    server = ThreadingHTTPServer((args.bind, args.port), handler)
    server.socket = default.wrap_socket(server.socket, server_side=True)
    print(f"serving {args.root} on https://{args.bind}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

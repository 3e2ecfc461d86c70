"""``python -m rooms_service.make_token``: mint an identity token for development.

Signs with the same keys the service checks with: ``TOKEN_SECRET`` from the environment (HS256), or a
private key in PEM (``--private-key``: RS256 for RSA, ES256 for P-256). The secret is never an argument,
so it stays out of shell history and process lists. Prints the token.

    TOKEN_SECRET=... python -m rooms_service.make_token --user alice --name Alice --rooms lobby,ops
    python -m rooms_service.make_token --private-key key.pem --user bob --rooms '*' --ttl 600
"""

import argparse
import os
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from rooms_service.tokens import algorithm_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rooms_service.make_token", description=__doc__)
    parser.add_argument("--user", required=True, help="the user id (the token's sub)")
    parser.add_argument("--name", help="the display name members see")
    parser.add_argument("--rooms", default="*", help="comma-separated room ids, or * for every room")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    parser.add_argument("--private-key", type=Path, help="PEM file: sign RS256 (RSA) or ES256 (P-256)")
    parser.add_argument("--audience", help="the aud claim (when the service sets TOKEN_AUDIENCE)")
    parser.add_argument("--issuer", help="the iss claim (when the service sets TOKEN_ISSUER)")
    args = parser.parse_args(argv)
    rooms: str | list[str] = "*" if args.rooms == "*" else [r for r in args.rooms.split(",") if r]
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.user, "rooms": rooms, "iat": now, "exp": now + int(args.ttl)}
    if args.name:
        claims["name"] = args.name
    if args.audience:
        claims["aud"] = args.audience
    if args.issuer:
        claims["iss"] = args.issuer
    if args.private_key is not None:
        key = load_pem_private_key(args.private_key.read_bytes(), password=None)
        algorithm = algorithm_for(key)
        if algorithm is None:
            print("the private key must be RSA or P-256", file=sys.stderr)
            return 1
        token = jwt.encode(claims, key, algorithm=algorithm)  # type: ignore[arg-type]
    else:
        secret = os.environ.get("TOKEN_SECRET", "")
        if len(secret.encode("utf-8")) < 32:
            print(
                "set TOKEN_SECRET (at least 32 bytes, as the service has it) or pass --private-key",
                file=sys.stderr,
            )
            return 1
        token = jwt.encode(claims, secret, algorithm="HS256")
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

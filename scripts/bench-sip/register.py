#!/usr/bin/env python3
"""Registers a contact for a SIP account on branchd, for scripts/bench-sip.sh.

Sends REGISTER from the address the SIPp UAS will then listen on, answers the 401
digest challenge (RFC 7616 / RFC 8760: the first challenge whose algorithm it knows,
SHA-256 or MD5, qop=auth) and expects 200. Written here rather than as a SIPp
scenario because SIPp 3.6.1 reads only the first WWW-Authenticate header and only
knows MD5, while branchd offers SHA-256 first (as RFC 8760 asks).

Exit status 0 on 200 (prints the registered Contact and Expires), 1 otherwise.
"""

import argparse
import hashlib
import os
import re
import socket
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registrar", required=True, help="host:port of branchd's SIP UDP listener")
    p.add_argument("--local", required=True, help="host:port to send from (the UAS's)")
    p.add_argument("--extension", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--timeout", type=float, default=5.0)
    return p.parse_args()


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def register(sock, args, local, cseq, call_id, tag, authorization=None):
    branch = "z9hG4bK-reg-" + os.urandom(6).hex()
    lines = [
        f"REGISTER sip:{args.domain} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
        f"From: <sip:{args.extension}@{args.domain}>;tag={tag}",
        f"To: <sip:{args.extension}@{args.domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{args.extension}@{local[0]}:{local[1]};transport=udp>",
        f"Expires: {args.expires}",
        "Max-Forwards: 70",
        "User-Agent: branchline-bench-uas",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines.append("Content-Length: 0")
    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), host_port(args.registrar))
    while True:
        data, _ = sock.recvfrom(65535)
        text = data.decode("utf-8", "replace")
        if f"CSeq: {cseq} REGISTER" in text or re.search(rf"(?im)^cseq:\s*{cseq}\s+REGISTER", text):
            status = int(text.split(" ", 2)[1])
            if status >= 200:
                return status, text


def challenges(response):
    out = []
    for m in re.finditer(r"(?im)^www-authenticate:\s*digest\s+(.*)$", response):
        params = dict(
            (k.lower(), v.strip('"'))
            for k, v in re.findall(r'([A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', m.group(1))
        )
        out.append(params)
    return out


HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


def authorization(args, challenge):
    algorithm = challenge.get("algorithm", "MD5").upper()
    h = lambda s: HASHES[algorithm](s.encode()).hexdigest()
    uri = f"sip:{args.domain}"
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{args.extension}:{realm}:{args.password}")
    ha2 = h(f"REGISTER:{uri}")
    parts = [
        f'username="{args.extension}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = os.urandom(8).hex(), "00000001"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'cnonce="{cnonce}"', f"nc={nc}", "qop=auth"]
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def main():
    args = parse_args()
    local = host_port(args.local)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(local)
    sock.settimeout(args.timeout)
    call_id = os.urandom(8).hex() + "@bench-sip"
    tag = os.urandom(4).hex()
    try:
        status, response = register(sock, args, local, 1, call_id, tag)
        if status == 401:
            usable = [c for c in challenges(response) if c.get("algorithm", "MD5").upper() in HASHES]
            if not usable:
                print("register: no SHA-256 or MD5 digest challenge in:\n" + response, file=sys.stderr)
                return 1
            status, response = register(
                sock, args, local, 2, call_id, tag, authorization(args, usable[0])
            )
    except socket.timeout:
        print(f"register: no answer from {args.registrar} within {args.timeout} s", file=sys.stderr)
        return 1
    if status != 200:
        print(f"register: {status}:\n{response}", file=sys.stderr)
        return 1
    contact = re.search(r"(?im)^(contact|m):\s*(.*)$", response)
    print(f"registered {args.extension}: {contact.group(2).strip() if contact else '(no Contact)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

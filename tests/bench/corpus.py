"""The benchmark corpus: a seeded mix of sshd, nginx access and application logs, made once.

Lines come in the proportions of a busy web host's logs (about a third each of sshd, nginx and an
application logging with Python tracebacks), and about 3.6% of them match one of the five rules
of `bench.toml`. The generator counts what it writes that each rule must match, so the benchmark
can check grep, logwarden and the Python baseline against a number none of them computed.

The corpus is cached in tests/bench/corpus/ (gitignored) next to a manifest holding the
generator's hash and parameters; it is rebuilt only when those change. Every matching line is
matched by exactly one rule, so a rule's count is a count of lines (what `grep -c` gives).

    python tests/bench/corpus.py --lines 100000     # build (or reuse) and print the manifest
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "corpus"
DEFAULT_LINES = 2_000_000
DEFAULT_SEED = 20261124
FORMAT_VERSION = 1  # bump to force a rebuild when the output changes without the source changing

RULES = ("ssh-failed-password", "ssh-invalid-user", "nginx-5xx", "app-error", "traceback")

USERS = [
    "root",
    "admin",
    "oracle",
    "test",
    "ubnt",
    "postgres",
    "git",
    "user",
    "ftpuser",
    "pi",
    "hadoop",
    "support",
    "guest",
    "ansible",
    "minecraft",
    "centos",
    "jenkins",
    "deploy",
    "www-data",
    "Administrator",
    "user1",
    "es",
    "steam",
    "teamspeak",
    "odoo",
]
GOOD_USERS = ["alice", "bob", "deploy", "ci-runner"]
METHODS = ["GET"] * 14 + ["POST"] * 4 + ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
PATHS = [
    "/",
    "/index.html",
    "/api/v1/products",
    "/api/v1/products/{n}",
    "/api/v1/cart",
    "/api/v1/orders/{n}",
    "/v1/search?q=red+shoes&page={n}",
    "/static/app.{h}.js",
    "/static/style.{h}.css",
    "/images/product-{n}.webp",
    "/health",
    "/login",
    "/checkout",
    "/wp-login.php",
    "/.env",
    "/account/orders?page={n}",
    "/favicon.ico",
    "/robots.txt",
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "kube-probe/1.30",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
]
REFERERS = [
    "-",
    "-",
    "https://shop.example.com/",
    "https://www.google.com/",
    "https://shop.example.com/cart",
]
LEVELS = ["INFO"] * 30 + ["DEBUG"] * 8 + ["WARNING"] * 4
THREADS = [
    "MainThread",
    "worker-1",
    "worker-2",
    "worker-3",
    "worker-4",
    "ThreadPoolExecutor-0_0",
    "ThreadPoolExecutor-0_1",
    "celery-beat",
]
LOGGERS = [
    "billing.invoices",
    "shop.api.orders",
    "shop.api.products",
    "shop.db",
    "celery.worker",
    "urllib3.connectionpool",
    "shop.auth",
    "shop.search",
]
INFO_MESSAGES = [
    "order {n} created for customer {m}",
    "GET /api/v1/products 200 {n}.3ms",
    "invoice INV-{n} sent",
    "cache hit for key product:{n}",
    "user {u} logged in",
    "search for 'red shoes' returned {n} results in {m}ms",
    "health check ok",
    "retrying in 2s (attempt 2/5)",
    "slow query took {n}ms: SELECT * FROM orders",
    "ERROR budget at {n}%: no action needed",
]
ERROR_MESSAGES = [
    "payment gateway returned 502 for invoice INV-{n}",
    "could not connect to redis at 127.0.0.1:6379: Connection refused",
    "task shop.tasks.send_receipt[{h}] raised unexpected: TimeoutError()",
    "unhandled error while processing request {n}",
]
SITE = "/srv/shop/venv/lib/python3.11/site-packages"
FRAMES = [  # (where, code) of a traceback's frames
    (
        '/srv/shop/current/shop/api/orders.py", line 142, in create_order',
        "invoice = billing.create_invoice(order)",
    ),
    (
        '/srv/shop/current/shop/billing/invoices.py", line 88, in create_invoice',
        "response = self.gateway.charge(order.total, order.customer.payment_token)",
    ),
    (
        f'{SITE}/requests/sessions.py", line 589, in request',
        "resp = self.send(prep, **send_kwargs)",
    ),
    (
        f'{SITE}/sqlalchemy/engine/base.py", line 1965, in _exec_single_context',
        "self.dialect.do_execute(",
    ),
    ('/srv/shop/current/shop/db.py", line 51, in save', "session.commit()"),
]
EXCEPTIONS = [
    "requests.exceptions.HTTPError: 502 Server Error: Bad Gateway for url: "
    "https://payments.example.net/v2/charges",
    "sqlalchemy.exc.IntegrityError: (psycopg2.errors.UniqueViolation) duplicate key value violates "
    'unique constraint "orders_pkey"',
    "KeyError: 'sub'",
    "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.",
]
KEY = "SHA256:Zk3nC7o1bQ9m0aDhzY1c2JtW9cGq8HfE0kLmNpQrStU"


@dataclass(frozen=True)
class Corpus:
    path: Path
    lines: int
    bytes: int
    seed: int
    expected: dict[str, int]  # rule → lines the generator wrote for it


def fingerprint(lines: int, seed: int) -> str:
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + f"|{lines}|{seed}|{FORMAT_VERSION}".encode()).hexdigest()


def ensure(lines: int = DEFAULT_LINES, seed: int = DEFAULT_SEED, log: Any = None) -> Corpus:
    """The corpus for these parameters, generated only when missing or out of date."""
    path = CORPUS_DIR / f"mixed-{lines}.log"
    manifest_path = path.with_suffix(".json")
    wanted = fingerprint(lines, seed)
    if path.exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == wanted and manifest.get("bytes") == path.stat().st_size:
            return Corpus(path, lines, manifest["bytes"], seed, manifest["expected"])
    if log:
        log(f"generating {lines:,} lines into {path} ...")
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="ascii", newline="\n") as stream:
        expected = generate(stream, lines, seed)
    temporary.replace(path)
    size = path.stat().st_size
    manifest = {
        "fingerprint": wanted,
        "lines": lines,
        "seed": seed,
        "bytes": size,
        "expected": expected,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return Corpus(path, lines, size, seed, expected)


class _Writer:
    """Random pieces of log lines, all from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        octet = rng.randint
        self.ips = [
            f"{octet(1, 223)}.{octet(0, 255)}.{octet(0, 255)}.{octet(1, 254)}" for _ in range(4000)
        ]
        self.ips += [
            f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}" for _ in range(200)
        ]
        self.clock = datetime(2026, 11, 24, tzinfo=UTC)
        self.pid = 20000

    def tick(self) -> datetime:
        self.clock += timedelta(microseconds=self.rng.randint(1, 40_000))
        return self.clock

    def fill(self, template: str) -> str:
        rng = self.rng
        n, m, h = rng.randint(1, 99999), rng.randint(1, 999), f"{rng.getrandbits(32):08x}"
        return template.format(n=n, m=m, h=h, u=rng.choice(GOOD_USERS))

    def sshd(self, counts: Counter[str]) -> list[str]:
        rng = self.rng
        stamp = self.tick().strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        if rng.random() < 0.3:
            self.pid += rng.randint(1, 9)
        head = f"{stamp} web1 sshd[{self.pid}]: "
        ip = rng.choice(self.ips)
        port = rng.randint(1024, 65535)
        r = rng.random()
        if r < 0.039:
            counts["ssh-failed-password"] += 1
            who = (
                f"invalid user {rng.choice(USERS)}" if rng.random() < 0.4 else rng.choice(USERS[:3])
            )
            return [f"{head}Failed password for {who} from {ip} port {port} ssh2"]
        if r < 0.059:
            counts["ssh-invalid-user"] += 1
            return [f"{head}Invalid user {rng.choice(USERS)} from {ip} port {port}"]
        user = rng.choice(GOOD_USERS)
        return [
            head
            + rng.choice(
                [
                    f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 {KEY}",
                    f"Connection closed by authenticating user root {ip} port {port} [preauth]",
                    f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]",
                    f"Disconnected from authenticating user root {ip} port {port} [preauth]",
                    f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)",
                    f"pam_unix(sshd:session): session closed for user {user}",
                    f"Connection closed by invalid user {rng.choice(USERS)} {ip} port {port} [preauth]",
                    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                    f"rhost={ip}  user=root",
                    f"Failed publickey for {user} from {ip} port {port} ssh2: RSA {KEY}",
                    "error: kex_exchange_identification: Connection closed by remote host",
                ]
            )
        ]

    def nginx(self, counts: Counter[str]) -> list[str]:
        rng = self.rng
        when = self.tick().strftime("%d/%b/%Y:%H:%M:%S +0000")
        r = rng.random()
        if r < 0.031:
            status = rng.choice((500, 502, 503, 504))
            counts["nginx-5xx"] += 1
        elif r < 0.2:
            status = rng.choice((301, 302, 304, 400, 401, 403, 404, 404, 404, 499))
        else:
            status = 200
        size = rng.randint(0, 120_000) if status == 200 else rng.randint(150, 600)
        path = self.fill(rng.choice(PATHS))
        protocol = rng.choice(("HTTP/1.1", "HTTP/1.1", "HTTP/2.0"))
        request = f"{rng.choice(METHODS)} {path} {protocol}"
        return [
            f'{rng.choice(self.ips)} - - [{when}] "{request}" {status} {size} '
            f'"{rng.choice(REFERERS)}" "{rng.choice(AGENTS)}"'
        ]

    def app(self, counts: Counter[str]) -> list[str]:
        rng = self.rng
        now = self.tick()
        stamp = now.strftime("%Y-%m-%d %H:%M:%S,") + f"{now.microsecond // 1000:03d}"
        thread, logger = rng.choice(THREADS), rng.choice(LOGGERS)
        r = rng.random()
        if r < 0.0175:
            counts["app-error"] += 1
            lines = [f"{stamp} ERROR [{thread}] {logger}: {self.fill(rng.choice(ERROR_MESSAGES))}"]
            if rng.random() < 0.6:
                counts["traceback"] += 1
                lines.append("Traceback (most recent call last):")
                for frame, code in rng.sample(FRAMES, rng.randint(1, 4)):
                    lines += [f'  File "{frame}', f"    {code}"]
                lines.append(rng.choice(EXCEPTIONS))
            return lines
        message = self.fill(rng.choice(INFO_MESSAGES))
        return [f"{stamp} {rng.choice(LEVELS)} [{thread}] {logger}: {message}"]


def generate(stream: Any, lines: int, seed: int) -> dict[str, int]:
    """Write exactly `lines` lines; return how many each rule must match."""
    writer = _Writer(seed)
    kinds = (writer.sshd, writer.nginx, writer.app)
    weights = (29, 27, 44)
    counts: Counter[str] = Counter(dict.fromkeys(RULES, 0))
    written = 0
    batch: list[str] = []
    choices = writer.rng.choices
    while written < lines:
        for kind in choices(kinds, weights, k=4096):
            hits: Counter[str] = Counter()
            produced = kind(hits)
            if written + len(produced) > lines:  # never cut a traceback: pad with a quiet line
                produced = [f"{writer.tick():%Y-%m-%d %H:%M:%S},000 INFO [MainThread] shop: tick"]
                produced *= lines - written
            else:
                counts.update(hits)
            batch += produced
            written += len(produced)
            if written >= lines:
                break
        stream.write("\n".join(batch) + "\n")
        batch.clear()
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    corpus = ensure(args.lines, args.seed, log=lambda text: print(text, file=sys.stderr))
    matching = sum(corpus.expected.values())
    share = 100 * matching / corpus.lines
    print(
        f"{corpus.path}: {corpus.lines:,} lines, {corpus.bytes / 1e6:.1f} MB, "
        f"{matching:,} matching ({share:.2f}%): {corpus.expected}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

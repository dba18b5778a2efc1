#!/usr/bin/env python3
"""`make demo`: the whole hookstream path on this machine, then a clean shutdown.

Starts the AI and CRM simulators, the gateway, a worker and the sink worker (each its own
process, logs in .hookstream/demo/), posts the signed sample webhooks of examples/webhooks/,
prints every CRM update they cause as it arrives, and stops everything. Needs a broker in
KAFKA_BOOTSTRAP_SERVERS (the Makefile starts one).

With ``--gateway-url`` and ``--crm-url`` it starts nothing: it posts the samples to a gateway
that runs elsewhere and prints the CRM updates that follow (the ``demo`` service of
docker-compose.yml). Either way the webhooks are signed with the demo's secrets (the variables
of DEMO_SECRETS, when set, win), and each run posts new webhook ids: a second run against the
same topics is not deduplicated away (the helpdesk id is a header, the payments id the body's
``id``, both suffixed with the run's id).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "flows.yaml"
SAMPLES = sorted((REPO / "examples" / "webhooks").glob("*.json"))
LOGS = REPO / ".hookstream" / "demo"
DEMO_SECRETS = {
    "HELPDESK_WEBHOOK_SECRET": "demo-helpdesk-secret",
    "PAYMENTS_WEBHOOK_SECRET": "demo-payments-secret",
    "AI_API_KEY": "demo-ai-key",
}
LISTENING = re.compile(r"listening on (http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "streams.cli.main", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )

    def wait_for(self, pattern: str, timeout_s: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_path.read_text(errors="replace"))
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"demo: {self.name} did not start; its log ends with:\n{tail}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def http_json(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def sign(source: str, body: bytes, secrets: Mapping[str, str], run_id: str) -> dict[str, str]:
    """The headers a sender of ``source`` adds, with this run's webhook id."""
    sys.path.insert(0, str(REPO))
    from streams.gateway.signatures import sign_hmac_sha256

    if source == "helpdesk":
        digest = sign_hmac_sha256(secrets["HELPDESK_WEBHOOK_SECRET"].encode(), body)
        webhook_id = f"demo-{run_id}-{hashlib.sha256(body).hexdigest()[:12]}"
        return {"X-Signature": f"sha256={digest}", "X-Webhook-Id": webhook_id}
    timestamp = int(time.time())
    digest = sign_hmac_sha256(
        secrets["PAYMENTS_WEBHOOK_SECRET"].encode(),
        body,
        timestamp=timestamp,
        encoding="base64",
    )
    return {"X-Payments-Signature": digest, "X-Payments-Timestamp": str(timestamp)}


def sample_body(source: str, path: Path, run_id: str) -> bytes:
    """The sample's bytes; a payments sample's ``id`` (its webhook id) gets the run's id."""
    body = path.read_bytes().strip()
    if source != "payments":
        return body
    document = json.loads(body)
    document["id"] = f"{document['id']}-{run_id}"
    return json.dumps(document).encode()


def wait_until_up(url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200: the services of a compose project start in any order."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, _ = http_json("GET", url)
        except (OSError, ValueError):
            status = 0
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {url} did not answer 200 within {timeout_s:.0f}s")
        time.sleep(0.5)


def post_and_follow(
    gateway_url: str, crm_url: str, secrets: Mapping[str, str], timeout_s: float
) -> int:
    """Post every sample, then print each CRM update as it arrives; 0 when all arrived."""
    run_id = f"{int(time.time() * 1000):x}"
    _, before = http_json("GET", f"{crm_url}/_sim/updates?after=0")
    seen = first = int(before["last_seq"])
    for sample in SAMPLES:
        source = sample.name.split("-")[0]
        body = sample_body(source, sample, run_id)
        headers = {"Content-Type": "application/json", **sign(source, body, secrets, run_id)}
        status, answer = http_json("POST", f"{gateway_url}/webhooks/{source}", body, headers)
        print(
            f"  POST /webhooks/{source:<8} {sample.name:<28} → {status} {answer.get('type')}"
            f" (partition {answer.get('partition')}, offset {answer.get('offset')})",
            flush=True,
        )
        if status != 202:
            raise SystemExit(f"demo: the gateway refused {sample.name}: {answer}")

    print("\ndemo: CRM updates as they arrive:", flush=True)
    deadline = time.monotonic() + timeout_s
    while seen - first < len(SAMPLES) and time.monotonic() < deadline:
        _, page = http_json("GET", f"{crm_url}/_sim/updates?after={seen}")
        for update in page["updates"]:
            seen = update["seq"]
            fields = update["body"]
            sentiment = fields.get("last_feedback_sentiment") or fields.get(
                "last_payment_sentiment"
            )
            summary = fields.get("last_feedback_summary") or fields.get("last_payment_summary")
            extra = fields.get("last_feedback_category") or fields.get("last_payment_event")
            print(f"  {update['customer_id']}: {sentiment:<8} {extra:<18} {summary}", flush=True)
        time.sleep(0.2)
    arrived = seen - first
    if arrived < len(SAMPLES):
        print(
            f"demo: only {arrived} of {len(SAMPLES)} updates arrived within {timeout_s:.0f}s",
            file=sys.stderr,
        )
        return 1
    print(f"\ndemo: {arrived} webhooks → {arrived} AI-derived CRM updates.", flush=True)
    return 0


def run_local(secrets: Mapping[str, str], timeout_s: float) -> int:
    """`make demo`: every hookstream process on this machine, stopped at the end."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("demo: KAFKA_BOOTSTRAP_SERVERS is not set; run `make demo`", file=sys.stderr)
        return 2
    LOGS.mkdir(parents=True, exist_ok=True)
    ai_port, crm_port = free_port(), free_port()
    env = {
        **os.environ,
        **secrets,
        "HOOKSTREAM_TOPIC_PREFIX": f"demo-{int(time.time())}",
        "HOOKSTREAM_AI_BASE_URL": f"http://127.0.0.1:{ai_port}/v1",
        "HOOKSTREAM_CRM_URL": f"http://127.0.0.1:{crm_port}",
        "HOOKSTREAM_STATE_DIR": str(REPO / ".hookstream"),
    }
    print(f"demo: broker {bootstrap}, topics {env['HOOKSTREAM_TOPIC_PREFIX']}.*, logs in {LOGS}")
    services: list[Service] = []
    try:
        ai = Service(
            "ai-sim",
            ["dev", "ai-sim", "--port", str(ai_port), "--latency-ms", "150", "--jitter-ms", "50"],
            env,
        )
        services.append(ai)
        crm = Service("crm-sim", ["dev", "crm-sim", "--port", str(crm_port)], env)
        services.append(crm)
        ai.wait_for(LISTENING.pattern)
        crm_url = crm.wait_for(LISTENING.pattern).group(1)
        gateway = Service("gateway", ["gateway", "-c", str(CONFIG), "--port", "0"], env)
        services.append(gateway)
        gateway_url = gateway.wait_for(LISTENING.pattern).group(1)
        for role in ("worker", "sinks"):
            services.append(Service(role, [role, "-c", str(CONFIG), "-l", "info"], env))
        for service in services[-2:]:
            service.wait_for(re.escape("[^Worker]: Ready"))
        print(f"demo: gateway {gateway_url}, worker and sinks ready\n")
        code = post_and_follow(gateway_url, crm_url, secrets, timeout_s)
        if code:
            print(f"demo: see the logs in {LOGS}", file=sys.stderr)
        else:
            print("demo: shutting down.")
        return code
    finally:
        for service in reversed(services):
            service.stop()
        print("demo: all processes stopped")


def build_parser() -> argparse.ArgumentParser:
    """The demo's options (also read by scripts/compose_check.py to check the compose demo)."""
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gateway-url",
        help="post to this running gateway (e.g. http://gateway:8080) instead of starting one",
    )
    parser.add_argument(
        "--crm-url", help="the running CRM simulator to follow (e.g. http://crm-sim:8092)"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="how long to wait for the services and the CRM updates (default 120)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    secrets = {name: os.environ.get(name) or value for name, value in DEMO_SECRETS.items()}
    if args.gateway_url is None and args.crm_url is None:
        return run_local(secrets, args.timeout_s)
    if args.gateway_url is None or args.crm_url is None:
        parser.error("--gateway-url and --crm-url go together")
    gateway_url, crm_url = args.gateway_url.rstrip("/"), args.crm_url.rstrip("/")
    print(f"demo: posting to {gateway_url}, following the CRM at {crm_url}", flush=True)
    wait_until_up(f"{gateway_url}/readyz", args.timeout_s)
    wait_until_up(f"{crm_url}/healthz", args.timeout_s)
    return post_and_follow(gateway_url, crm_url, secrets, args.timeout_s)


if __name__ == "__main__":
    raise SystemExit(main())

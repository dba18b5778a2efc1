#!/usr/bin/env python3
"""`make demo`: the whole hookstream path on this machine, then a clean shutdown.

Starts the AI and CRM simulators, the gateway, a worker and the sink worker (each its own
process, logs in .hookstream/demo/), posts the signed sample webhooks of examples/webhooks/,
prints every CRM update they cause as it arrives, and stops everything. Needs a broker in
KAFKA_BOOTSTRAP_SERVERS (the Makefile starts one).
"""

from __future__ import annotations

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


def sign(source: str, body: bytes) -> dict[str, str]:
    sys.path.insert(0, str(REPO))
    from streams.gateway.signatures import sign_hmac_sha256

    if source == "helpdesk":
        digest = sign_hmac_sha256(DEMO_SECRETS["HELPDESK_WEBHOOK_SECRET"].encode(), body)
        webhook_id = "demo-" + hashlib.sha256(body).hexdigest()[:12]
        return {"X-Signature": f"sha256={digest}", "X-Webhook-Id": webhook_id}
    timestamp = int(time.time())
    digest = sign_hmac_sha256(
        DEMO_SECRETS["PAYMENTS_WEBHOOK_SECRET"].encode(),
        body,
        timestamp=timestamp,
        encoding="base64",
    )
    return {"X-Payments-Signature": digest, "X-Payments-Timestamp": str(timestamp)}


def main() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("demo: KAFKA_BOOTSTRAP_SERVERS is not set; run `make demo`", file=sys.stderr)
        return 2
    LOGS.mkdir(parents=True, exist_ok=True)
    ai_port, crm_port = free_port(), free_port()
    env = {
        **os.environ,
        **{k: os.environ.get(k, v) for k, v in DEMO_SECRETS.items()},
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

        for sample in SAMPLES:
            source = sample.name.split("-")[0]
            body = sample.read_bytes().strip()
            headers = {"Content-Type": "application/json", **sign(source, body)}
            status, answer = http_json("POST", f"{gateway_url}/webhooks/{source}", body, headers)
            print(
                f"  POST /webhooks/{source:<8} {sample.name:<28} → {status} {answer.get('type')}"
                f" (partition {answer.get('partition')}, offset {answer.get('offset')})"
            )
            if status != 202:
                raise SystemExit(f"demo: the gateway refused {sample.name}: {answer}")

        print("\ndemo: CRM updates as they arrive:")
        seen, deadline = 0, time.monotonic() + 120
        while seen < len(SAMPLES) and time.monotonic() < deadline:
            _, page = http_json("GET", f"{crm_url}/_sim/updates?after={seen}")
            for update in page["updates"]:
                seen = update["seq"]
                fields = update["body"]
                sentiment = fields.get("last_feedback_sentiment") or fields.get(
                    "last_payment_sentiment"
                )
                summary = fields.get("last_feedback_summary") or fields.get("last_payment_summary")
                extra = fields.get("last_feedback_category") or fields.get("last_payment_event")
                print(f"  {update['customer_id']}: {sentiment:<8} {extra:<18} {summary}")
            time.sleep(0.2)
        if seen < len(SAMPLES):
            print(
                f"demo: only {seen} of {len(SAMPLES)} updates arrived; see {LOGS}", file=sys.stderr
            )
            return 1
        print(f"\ndemo: {seen} webhooks → {seen} AI-derived CRM updates. Shutting down.")
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        print("demo: all processes stopped")


if __name__ == "__main__":
    raise SystemExit(main())

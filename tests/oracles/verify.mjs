// The senders' own Node SDKs as oracles for hookstream's signature presets.
//
// Reads a JSON array of checks on stdin and writes a JSON array of answers (same order) on
// stdout; one process answers a whole test's checks, so each SDK loads once per test. Called by
// tests/unit/streams/gateway/test_signature_presets.py through tests/support/oracles.py.
//
//   {"oracle": "linear",   "secret": S, "body_b64": B, "headers": {...}}  -> {"valid": bool, "detail": text}
//   {"oracle": "shopify",  "secret": S, "body_b64": B, "headers": {...}}  -> {"valid": bool, "detail": text}
//   {"oracle": "hub-sha1", "secret": S, "body_b64": B, "headers": {...}}  -> {"valid": bool, "detail": text}
//   {"oracle": "hub-sha1-sign", "secret": S, "body_b64": B}               -> {"signature": "sha1=<hex>"}
//
// linear:   @linear/sdk's LinearWebhookClient.verify (Linear-Signature, and the body's
//           webhookTimestamp within Linear's own minute of the clock).
// shopify:  @shopify/shopify-api's webhooks.validate (X-Shopify-Hmac-Sha256 and the other
//           headers Shopify sends with every webhook).
// hub-sha1: @octokit/webhooks-methods 3.x's verify/sign of an `X-Hub-Signature: sha1=<hex>`
//           header, the PubSubHubbub convention Intercom's signed notifications follow (the
//           last Octokit major that still handles sha1).

// Anything an SDK prints goes to stderr: stdout carries only the answers.
console.log = console.error;
console.info = console.error;
console.warn = console.error;

const { LinearWebhookClient } = await import("@linear/sdk/webhooks");
await import("@shopify/shopify-api/adapters/web-api");
const { shopifyApi, ApiVersion, LogSeverity } = await import("@shopify/shopify-api");
const octokit = await import("@octokit/webhooks-methods");

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function linear(check, body) {
  try {
    const client = new LinearWebhookClient(check.secret);
    const signature = check.headers["Linear-Signature"] ?? "";
    return { valid: client.verify(body, signature), detail: "" };
  } catch (error) {
    return { valid: false, detail: String(error.message ?? error) };
  }
}

async function shopify(check, body) {
  const api = shopifyApi({
    apiKey: "hookstream-test",
    apiSecretKey: check.secret,
    scopes: [],
    hostName: "hooks.example.com",
    apiVersion: ApiVersion.January26,
    isEmbeddedApp: false,
    logger: { level: LogSeverity.Error, log: async () => {} },
  });
  const rawRequest = new Request("https://hooks.example.com/webhooks/shop", {
    method: "POST",
    headers: check.headers,
    body,
  });
  // Shopify's SDK takes the raw body as text; the UTF-8 bytes are what it signs.
  const result = await api.webhooks.validate({ rawBody: body.toString("utf8"), rawRequest });
  return { valid: result.valid, detail: result.valid ? "" : String(result.reason) };
}

async function hubSha1(check, body) {
  const signature = check.headers["X-Hub-Signature"] ?? "";
  try {
    return { valid: await octokit.verify(check.secret, body.toString("utf8"), signature), detail: "" };
  } catch (error) {
    return { valid: false, detail: String(error.message ?? error) };
  }
}

async function answer(check) {
  const body = Buffer.from(check.body_b64, "base64");
  switch (check.oracle) {
    case "linear":
      return linear(check, body);
    case "shopify":
      return shopify(check, body);
    case "hub-sha1":
      return hubSha1(check, body);
    case "hub-sha1-sign":
      return {
        signature: await octokit.sign({ secret: check.secret, algorithm: "sha1" }, body.toString("utf8")),
      };
    default:
      throw new Error(`unknown oracle ${JSON.stringify(check.oracle)}`);
  }
}

const checks = JSON.parse(await readStdin());
const answers = [];
for (const check of checks) answers.push(await answer(check));
process.stdout.write(JSON.stringify(answers));

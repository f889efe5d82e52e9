#!/usr/bin/env node
/**
 * The application backend of the push demo: it holds no keys, and POSTs each message to
 * the sealpost REST gateway, which seals and publishes it.
 *
 *   node backend.mjs http://127.0.0.1:8080 TOKEN push/news "hello"
 */
export async function post(gateway, token, topic, message) {
  const res = await fetch(`${gateway}/v1/topics/${topic}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "text/plain" },
    body: message,
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`gateway answered ${res.status}: ${body.error}`);
  return body;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [gateway, token, topic, message] = process.argv.slice(2);
  post(gateway, token, topic, message).then(
    (r) => console.log(`published ${r.topic} seq ${r.seq}`),
    (e) => {
      console.error(e.message);
      process.exit(1);
    },
  );
}
